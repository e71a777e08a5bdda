//! A log-log line plot written as plain SVG (no font files or rendering libraries needed: the
//! text is SVG `<text>` that the viewer renders).

use std::fmt::Write as _;

/// One plotted line.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Stroke colour (any SVG colour).
    pub color: &'static str,
    /// Dashed line.
    pub dashed: bool,
    /// Points (x, y), both > 0.
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 760.0;
const H: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Decades (floor(log10 min) ..= ceil(log10 max)) covering the values; (0, 1) when empty.
fn decades(vals: impl Iterator<Item = f64>) -> (i32, i32) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| *v > 0.0 && v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0, 1);
    }
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (a, if b > a { b } else { a + 1 })
}

fn label_pow10(e: i32, unit: &str) -> String {
    match unit {
        "s" => match e {
            e if e <= -7 => format!("1e{e} s"),
            -6..=-4 => format!("{} µs", 10f64.powi(e + 6)),
            -3..=-1 => format!("{} ms", 10f64.powi(e + 3)),
            _ => format!("{} s", 10f64.powi(e)),
        },
        _ => format!("10^{e}"),
    }
}

/// The plot area and its log-log scales.
struct Frame {
    /// Decades shown on the x axis.
    x: (i32, i32),
    /// Decades shown on the y axis.
    y: (i32, i32),
    /// Width of the plot area.
    pw: f64,
    /// Height of the plot area.
    ph: f64,
}

impl Frame {
    fn new(series: &[Series]) -> Frame {
        let pts = || series.iter().flat_map(|s| s.points.iter().copied());
        Frame {
            x: decades(pts().map(|p| p.0)),
            y: decades(pts().map(|p| p.1)),
            pw: W - LEFT - RIGHT,
            ph: H - TOP - BOTTOM,
        }
    }

    /// The horizontal position of `x`.
    fn sx(&self, x: f64) -> f64 {
        let (x0, x1) = self.x;
        LEFT + (x.log10() - f64::from(x0)) / f64::from(x1 - x0) * self.pw
    }

    /// The vertical position of `y`.
    fn sy(&self, y: f64) -> f64 {
        let (y0, y1) = self.y;
        TOP + self.ph - (y.log10() - f64::from(y0)) / f64::from(y1 - y0) * self.ph
    }

    /// A grid line and label per decade on both axes.
    fn grid(&self, s: &mut String) {
        let (pw, ph) = (self.pw, self.ph);
        for e in self.x.0..=self.x.1 {
            let x = self.sx(10f64.powi(e));
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 18.0,
                label_pow10(e, "")
            );
        }
        for e in self.y.0..=self.y.1 {
            let y = self.sy(10f64.powi(e));
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                escape(&label_pow10(e, "s"))
            );
        }
    }

    /// The plot area's border and the axis labels.
    fn axes(&self, s: &mut String, xlabel: &str, ylabel: &str) {
        let (pw, ph) = (self.pw, self.ph);
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 18.0,
            escape(xlabel)
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            escape(ylabel)
        );
    }

    /// Series `se`, the `i`-th: its line and points (those with both coordinates positive and
    /// finite), and its legend entry.
    fn series(&self, s: &mut String, i: usize, se: &Series) {
        let mut p: Vec<(f64, f64)> = se
            .points
            .iter()
            .copied()
            .filter(|(x, y)| *x > 0.0 && *y > 0.0 && x.is_finite() && y.is_finite())
            .collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        let dash = if se.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        if !p.is_empty() {
            let path: Vec<String> = p
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", self.sx(*x), self.sy(*y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
                path.join(" "),
                se.color
            );
            for (x, y) in &p {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                    self.sx(*x),
                    self.sy(*y),
                    se.color
                );
            }
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = LEFT + self.pw + 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            se.color,
            lx + 30.0,
            ly + 4.0,
            escape(&se.label)
        );
    }

    /// The notes, below the legend of `n_series` series.
    fn notes(&self, s: &mut String, n_series: usize, notes: &[String]) {
        for (j, note) in notes.iter().enumerate() {
            let ly = TOP + 20.0 * (n_series as f64 + 1.0) + 16.0 * j as f64;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{ly:.1}" font-size="11">{}</text>"#,
                LEFT + self.pw + 12.0,
                escape(note)
            );
        }
    }
}

/// The SVG text of a log-log plot of `series` (points with a non-positive coordinate are
/// left out), x axis in chains, y axis in seconds.
pub fn loglog(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    notes: &[String],
) -> String {
    let f = Frame::new(series);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + f.pw / 2.0,
        escape(title)
    );
    f.grid(&mut s);
    f.axes(&mut s, xlabel, ylabel);
    for (i, se) in series.iter().enumerate() {
        f.series(&mut s, i, se);
    }
    f.notes(&mut s, series.len(), notes);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decades_cover_values() {
        assert_eq!(decades([1000.0, 1e6].into_iter()), (3, 6));
        assert_eq!(decades([0.002, 0.5].into_iter()), (-3, 0));
        assert_eq!(decades([100.0].into_iter()), (2, 3));
        assert_eq!(decades(std::iter::empty()), (0, 1));
        assert_eq!(decades([0.0, -1.0].into_iter()), (0, 1));
    }

    #[test]
    fn plot_has_every_series_and_escapes_text() {
        let s = loglog(
            "a <b>",
            "N",
            "t",
            &[
                Series {
                    label: "original".into(),
                    color: "red",
                    dashed: false,
                    points: vec![(1e3, 1e-4), (1e4, 1e-3), (0.0, 1.0)],
                },
                Series {
                    label: "rsync & co".into(),
                    color: "blue",
                    dashed: true,
                    points: vec![(1e3, 0.01)],
                },
            ],
            &["pruned: not implemented".into()],
        );
        assert!(s.starts_with("<svg"));
        assert!(s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt;b&gt;"));
        assert!(s.contains("rsync &amp; co"));
        assert_eq!(s.matches("<polyline").count(), 2);
        // The (0, 1) point is dropped: 3 circles in all.
        assert_eq!(s.matches("<circle").count(), 3);
        assert!(s.contains("pruned: not implemented"));
    }
}
