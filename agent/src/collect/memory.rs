//! Installed memory and swap. A machine without swap has `swap_total_bytes: 0`, a known value.

use census_common::Memory;

use super::Warnings;

pub fn collect(system: Option<&mut sysinfo::System>, warnings: &mut Warnings) -> Memory {
    let Some(system) = system else {
        warnings.add("memory", "system information unavailable");
        return Memory::default();
    };
    system.refresh_memory();
    let total = system.total_memory();
    if total == 0 {
        warnings.add("memory", "the kernel reported no memory size");
        return Memory::default();
    }
    Memory {
        total_bytes: Some(total),
        swap_total_bytes: Some(system.total_swap()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_memory() {
        let mut system = sysinfo::System::new().unwrap();
        let mut warnings = Warnings::default();
        let memory = collect(Some(&mut system), &mut warnings);
        assert!(memory.total_bytes.unwrap() > 0);
        assert!(memory.swap_total_bytes.is_some());
        assert!(warnings.lines().is_empty());
    }
}
