//! Aligned text tables, as the commands print them: a header row, then one
//! row per item, each column as wide as its widest cell, `gap` spaces between
//! columns, the last column unpadded and no trailing spaces.

/// `header` and `rows` as aligned lines, each ending in a newline.
pub fn render(header: &[&str], rows: &[Vec<String>], gap: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut s = String::new();
        for (n, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if n + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}{:gap$}", ""));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header);
    for row in rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![
            vec!["xyz".to_string(), "1".to_string()],
            vec!["é".to_string(), String::new()],
        ];
        assert_eq!(
            render(&["A", "LONGER"], &rows, 2),
            "A    LONGER\nxyz  1\né\n"
        );
        assert_eq!(render(&["A", "B"], &rows[..1], 3), "A     B\nxyz   1\n");
    }
}
