//! A chart's legend, drawn below its plot in as many columns as the width
//! holds, so that hundreds of runs still fit (the chart grows taller rather
//! than the legend covering the lines). Long labels are cut with "…".

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Area, DrawError};

/// How an entry's sample is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Mark {
    Line,
    Dashed,
    /// A line with a circle on it (a sweep curve's point).
    Circle,
    /// A thick line with a square on it (the EPLB baseline).
    Square,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub label: String,
    pub color: RGBColor,
    pub mark: Mark,
}

const ROW: u32 = 19;
const PADDING: u32 = 8;
const SAMPLE: i32 = 26;
const FONT: u32 = 15;
/// A generous width of one character at [`FONT`] (plotters writes it as
/// `font-size` 12.1 px: it divides by 1.24), so that columns do not overlap
/// whatever font the browser picks.
const CHAR_WIDTH: f64 = 7.0;
const MAX_CHARS: usize = 44;

/// Columns and rows the legend takes in `width` pixels.
fn grid(entries: &[Entry], width: u32) -> (usize, usize) {
    if entries.is_empty() {
        return (1, 0);
    }
    let longest = entries
        .iter()
        .map(|e| e.label.chars().count().min(MAX_CHARS))
        .max()
        .unwrap_or(0);
    let column = (longest as f64 * CHAR_WIDTH) as u32 + SAMPLE as u32 + 24;
    let columns =
        (width.saturating_sub(2 * PADDING) / column.max(1)).clamp(1, entries.len() as u32) as usize;
    (columns, entries.len().div_ceil(columns))
}

/// Pixels of height the legend needs below a chart `width` wide.
pub(super) fn height(entries: &[Entry], width: u32) -> u32 {
    let (_, rows) = grid(entries, width);
    if rows == 0 {
        0
    } else {
        rows as u32 * ROW + 2 * PADDING
    }
}

/// Draws the legend into `area` (as tall as [`height`] said).
pub(super) fn draw(area: &Area, entries: &[Entry]) -> Result<(), DrawError> {
    let (width, _) = area.dim_in_pixel();
    let (columns, rows) = grid(entries, width);
    if rows == 0 {
        return Ok(());
    }
    let column = (width.saturating_sub(2 * PADDING) as usize / columns) as i32;
    let font = ("sans-serif", FONT).into_font().color(&BLACK);
    for (index, entry) in entries.iter().enumerate() {
        // Column-major: a policy's runs, adjacent in summary order, stay
        // together down one column.
        let x = PADDING as i32 + (index / rows) as i32 * column;
        let y = PADDING as i32 + (index % rows) as i32 * ROW as i32 + ROW as i32 / 2;
        sample(area, (x, y), entry)?;
        area.draw(&Text::new(
            shorten(&entry.label),
            (x + SAMPLE + 6, y),
            font.pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// The little line (and marker) before a label.
fn sample(area: &Area, (x, y): (i32, i32), entry: &Entry) -> Result<(), DrawError> {
    let color = entry.color;
    match entry.mark {
        Mark::Line => area.draw(&PathElement::new(
            vec![(x, y), (x + SAMPLE, y)],
            color.stroke_width(2),
        ))?,
        Mark::Dashed => {
            for start in (0..SAMPLE).step_by(8) {
                let end = (start + 5).min(SAMPLE);
                area.draw(&PathElement::new(
                    vec![(x + start, y), (x + end, y)],
                    color.stroke_width(2),
                ))?;
            }
        }
        Mark::Circle => {
            area.draw(&PathElement::new(
                vec![(x, y), (x + SAMPLE, y)],
                color.stroke_width(2),
            ))?;
            area.draw(&Circle::new((x + SAMPLE / 2, y), 4, color.filled()))?;
        }
        Mark::Square => {
            area.draw(&PathElement::new(
                vec![(x, y), (x + SAMPLE, y)],
                color.stroke_width(3),
            ))?;
            let c = x + SAMPLE / 2;
            area.draw(&Rectangle::new(
                [(c - 4, y - 4), (c + 4, y + 4)],
                color.filled(),
            ))?;
        }
    }
    Ok(())
}

fn shorten(label: &str) -> String {
    if label.chars().count() <= MAX_CHARS {
        label.to_owned()
    } else {
        let mut cut: String = label.chars().take(MAX_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize, label: &str) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                label: format!("{label} {i}"),
                color: BLACK,
                mark: Mark::Line,
            })
            .collect()
    }

    #[test]
    fn many_entries_take_columns_and_grow_down() {
        assert_eq!(height(&[], 960), 0);
        let (columns, rows) = grid(&entries(3, "optimal:previous every"), 960);
        assert_eq!((columns, rows), (3, 1));
        let (columns, rows) = grid(&entries(300, "optimal:previous every"), 960);
        assert!(columns >= 4, "{columns}");
        assert_eq!(rows, 300usize.div_ceil(columns));
        assert!(height(&entries(300, "x"), 960) > height(&entries(30, "x"), 960));
    }

    #[test]
    fn long_labels_are_cut() {
        let long = "service:threshold=0.02,hysteresis=0.5,alpha=0.3,tolerance=0.01 every 16";
        let cut = shorten(long);
        assert_eq!(cut.chars().count(), MAX_CHARS);
        assert!(cut.ends_with('…'));
        let (columns, _) = grid(&entries(10, long), 960);
        assert!(columns >= 2);
    }
}
