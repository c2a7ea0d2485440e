//! Network interfaces: name, MAC address, addresses in CIDR form, and whether the interface is
//! virtual.
//!
//! An interface is virtual when the kernel shows no device behind it (no
//! `/sys/class/net/<name>/device`): loopback, bridges, veth pairs, tun/tap, WireGuard, bonds.
//! The all-zero MAC of loopback and tunnels is `None`: it identifies nothing. Other OSes have
//! no such view, and report every interface as not virtual.

use census_common::NetworkInterface;

use super::{Root, Warnings};

pub fn collect(
    root: &Root,
    networks: Option<&mut sysinfo::Networks>,
    warnings: &mut Warnings,
) -> Vec<NetworkInterface> {
    let Some(networks) = networks else {
        warnings.add("network_interfaces", "could not list network interfaces");
        return Vec::new();
    };
    networks.refresh(true);
    networks
        .iter()
        .map(|(name, data)| (name.to_string_lossy(), data))
        .map(|(name, data)| NetworkInterface {
            r#virtual: is_virtual(root, &name),
            name: name.into_owned(),
            mac: mac(data.mac_address().0),
            addresses: data
                .ip_networks()
                .iter()
                .map(|net| format!("{}/{}", net.addr, net.prefix))
                .collect(),
        })
        .collect()
}

/// Lowercase, colon-separated; `None` for the all-zero address.
pub fn mac(bytes: [u8; 6]) -> Option<String> {
    if bytes == [0; 6] {
        return None;
    }
    Some(
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// Only Linux shows whether a device backs an interface; on other OSes no interface is called
/// virtual (the field has no "unknown").
pub fn is_virtual(root: &Root, name: &str) -> bool {
    cfg!(target_os = "linux")
        && !root
            .path("/sys/class/net")
            .join(name)
            .join("device")
            .exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture;

    #[test]
    fn mac_is_lowercase_with_colons_and_zero_is_none() {
        assert_eq!(
            mac([0x52, 0x54, 0x00, 0xAB, 0x0c, 0xff]).as_deref(),
            Some("52:54:00:ab:0c:ff")
        );
        assert_eq!(mac([0; 6]), None);
    }

    #[test]
    fn interfaces_without_a_device_are_virtual() {
        let root = Root::at(fixture("roots/kvm-server"));
        assert!(!is_virtual(&root, "enp1s0"));
        assert!(is_virtual(&root, "lo"));
        assert!(is_virtual(&root, "docker0"));
        assert!(is_virtual(&root, "missing0"));
    }

    #[test]
    fn this_machine_lists_loopback_as_virtual() {
        let mut networks = sysinfo::Networks::new_with_refreshed_list().unwrap();
        let mut warnings = Warnings::default();
        let nics = collect(&Root::host(), Some(&mut networks), &mut warnings);
        if let Some(lo) = nics.iter().find(|n| n.name == "lo") {
            assert!(lo.r#virtual);
            assert_eq!(lo.mac, None);
            assert!(
                lo.addresses.iter().any(|a| a == "127.0.0.1/8"),
                "{:?}",
                lo.addresses
            );
        }
    }
}
