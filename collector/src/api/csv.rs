//! `text/csv` answers for list routes: a client that sends `Accept: text/csv` gets the page as
//! an RFC 4180 table (header row, CRLF line ends, fields quoted when they hold a comma, quote,
//! CR or LF) instead of JSON. The next page's cursor is in the `Link` header
//! (`<...?cursor=X>; rel="next"`) and in `X-Next-Cursor`, since a table has nowhere to put it.
//!
//! A field that starts with `=`, `+`, `-`, `@`, tab or CR is prefixed with `'`, so a hostile
//! hostname or package name cannot run as a formula when an admin opens the file in a
//! spreadsheet (CSV injection); numbers are written as they are.

use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};

/// The media type of the answers.
pub const TEXT_CSV: &str = "text/csv; charset=utf-8";

/// Whether the client asked for CSV: `text/csv` is in `Accept` and ranked above JSON (a
/// browser's `*/*` or a missing header keep JSON).
pub fn wants_csv(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let quality = |wanted: &str| -> f32 {
        accept
            .split(',')
            .filter_map(|item| {
                let mut parts = item.split(';');
                let media = parts.next()?.trim();
                if !media.eq_ignore_ascii_case(wanted) {
                    return None;
                }
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some(q)
            })
            .fold(0.0, f32::max)
    };
    let csv = quality("text/csv");
    csv > 0.0 && csv >= quality("application/json")
}

/// One cell: text, a number, or nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Number(String),
    Empty,
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::Text(s.to_owned())
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::Text(s)
    }
}

impl From<Option<&str>> for Cell {
    fn from(s: Option<&str>) -> Cell {
        s.map_or(Cell::Empty, Cell::from)
    }
}

impl From<Option<String>> for Cell {
    fn from(s: Option<String>) -> Cell {
        s.map_or(Cell::Empty, Cell::Text)
    }
}

impl From<i64> for Cell {
    fn from(n: i64) -> Cell {
        Cell::Number(n.to_string())
    }
}

impl From<u64> for Cell {
    fn from(n: u64) -> Cell {
        Cell::Number(n.to_string())
    }
}

impl From<Option<i64>> for Cell {
    fn from(n: Option<i64>) -> Cell {
        n.map_or(Cell::Empty, Cell::from)
    }
}

impl From<bool> for Cell {
    fn from(b: bool) -> Cell {
        Cell::Number(b.to_string())
    }
}

fn push_field(out: &mut String, cell: &Cell) {
    let text = match cell {
        Cell::Empty => return,
        Cell::Number(n) => {
            out.push_str(n);
            return;
        }
        Cell::Text(t) => t,
    };
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || text.contains([',', '"', '\r', '\n']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in text.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

/// The table as CSV text.
pub fn to_csv(columns: &[&str], rows: &[Vec<Cell>]) -> String {
    let mut out = String::new();
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_field(&mut out, &Cell::from(*column));
    }
    out.push_str("\r\n");
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_field(&mut out, cell);
        }
        out.push_str("\r\n");
    }
    out
}

/// A `200 text/csv` answer; `next_cursor` (if any) goes in `X-Next-Cursor` and in a `Link`
/// header built from the request's `uri` with its `cursor` replaced.
pub fn response(
    uri: &Uri,
    columns: &[&str],
    rows: &[Vec<Cell>],
    next_cursor: Option<&str>,
) -> Response {
    let mut response = ([(header::CONTENT_TYPE, TEXT_CSV)], to_csv(columns, rows)).into_response();
    if let Some(cursor) = next_cursor {
        let query: Vec<String> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
            .map(str::to_owned)
            .chain([format!("cursor={cursor}")])
            .collect();
        let link = format!("<{}?{}>; rel=\"next\"", uri.path(), query.join("&"));
        let headers = response.headers_mut();
        // Cursors are URL-safe base64 and paths are ASCII; a value that still cannot be a
        // header is left out rather than failing the answer.
        if let Ok(value) = HeaderValue::from_str(cursor) {
            headers.insert("x-next-cursor", value);
        }
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.insert(header::LINK, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        let text = to_csv(
            &["name", "n", "note"],
            &[
                vec!["web-1".into(), 3i64.into(), Cell::Empty],
                vec!["a,b".into(), (-2i64).into(), "say \"hi\"\nthere".into()],
                vec!["=cmd|' /C calc'!A0".into(), 0i64.into(), "-1".into()],
            ],
        );
        assert_eq!(
            text,
            "name,n,note\r\nweb-1,3,\r\n\"a,b\",-2,\"say \"\"hi\"\"\nthere\"\r\n\
             \"'=cmd|' /C calc'!A0\",0,\"'-1\"\r\n"
        );
    }

    #[test]
    fn accept_header_decides() {
        let with = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            wants_csv(&headers)
        };
        assert!(!wants_csv(&HeaderMap::new()));
        assert!(with("text/csv"));
        assert!(with("text/csv, application/json;q=0.5"));
        assert!(!with("application/json, text/csv;q=0.5"));
        assert!(!with("*/*"));
        assert!(!with("text/csv;q=0"));
    }

    #[test]
    fn next_cursor_goes_in_the_link_header() {
        let uri: Uri = "/api/v1/cis?class=computer&cursor=old&limit=2".parse().unwrap();
        let response = response(&uri, &["id"], &[vec![1i64.into()]], Some("abc"));
        let headers = response.headers();
        assert_eq!(headers["x-next-cursor"], "abc");
        assert_eq!(
            headers[header::LINK],
            "</api/v1/cis?class=computer&limit=2&cursor=abc>; rel=\"next\""
        );
        assert_eq!(headers[header::CONTENT_TYPE], TEXT_CSV);
    }
}
