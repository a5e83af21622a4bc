//! Draws `throughput-vs-rules.png`, the picture the overhead scenario is
//! about: TCP throughput relative to no injector as the rule count grows
//! (log scale), faultbpf next to an nftables linear chain and set, one panel
//! with offloads on and one with them off. Drawn by the bench itself
//! (plotters' bitmap backend), with text from DejaVu Sans read at run time
//! (`fonts-dejavu-core`, installed by `cargo xtask setup`), so no fontconfig
//! or other plotting tool is needed.

use std::{path::Path, sync::OnceLock};

use anyhow::{Result, anyhow};
use plotters::{prelude::*, style::FontStyle};

use super::stats::Spread;

/// The TTF the plot's text is drawn with.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One line of a panel: (rule count, ratio spread) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(usize, Spread)>,
}

pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

/// Registers [`FONT`] as plotters' "sans-serif", once.
fn font() -> Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT).map_err(|e| {
                format!("reading {FONT} ({e}): install fonts-dejavu-core (`cargo xtask setup`)")
            })?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT} is not a font plotters can read"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// `1`, `10`, `100`, `1k`, `10k`, `100k`.
fn rules_label(x: &f64) -> String {
    let x = x.round();
    if x >= 1000.0 {
        format!("{}k", x / 1000.0)
    } else {
        format!("{x}")
    }
}

/// Draws the panels side by side into `path` (PNG).
pub fn throughput_vs_rules(path: &Path, panels: &[Panel]) -> Result<()> {
    font()?;
    let e = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let root = BitMapBackend::new(path, (1400, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root = root
        .titled(
            "faultbpf vs nftables: unmatched TCP throughput as rules grow",
            ("sans-serif", 26),
        )
        .map_err(|x| e(&x))?;
    let colors = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
    ];
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, panel) in areas.iter().zip(panels) {
        let top = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|(_, p)| p.max))
            .fold(1.1f64, f64::max)
            // Headroom above the data for the legend.
            * 1.4;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 20))
            .margin(18)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d((0.7f64..100_000f64).log_scale(), 0f64..top)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("rules loaded (log scale)")
            .y_desc("throughput / no-injector baseline")
            .x_label_formatter(&rules_label)
            .y_label_formatter(&|y| format!("{y:.1}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(|x| e(&x))?;
        let goal = RGBColor(0x55, 0x55, 0x55);
        chart
            .draw_series(LineSeries::new(
                [(0.7, 0.97), (100_000.0, 0.97)],
                goal.stroke_width(1),
            ))
            .map_err(|x| e(&x))?
            .label("goal for faultbpf: 0.97")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], goal.stroke_width(1)));
        let count = panel.series.len() as f64;
        for (i, (series, &color)) in panel.series.iter().zip(colors.iter().cycle()).enumerate() {
            // Series sit side by side around each rule count (a few percent
            // apart on the log axis), so their whiskers do not hide each other.
            let dodge = 1.0 + 0.07 * (i as f64 - (count - 1.0) / 2.0);
            let pts: Vec<(f64, Spread)> = series
                .points
                .iter()
                .map(|&(n, s)| (n as f64 * dodge, s))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|&(x, s)| (x, s.median)),
                    color.stroke_width(3),
                ))
                .map_err(|x| e(&x))?
                .label(series.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 24, y)], color.stroke_width(3))
                });
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(x, s)| Circle::new((x, s.median), 5, color.filled())),
                )
                .map_err(|x| e(&x))?;
            // min..max over rounds.
            chart
                .draw_series(pts.iter().map(|&(x, s)| {
                    PathElement::new([(x, s.min), (x, s.max)], color.mix(0.6).stroke_width(2))
                }))
                .map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperMiddle)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_axis_labels() {
        assert_eq!(rules_label(&1.0), "1");
        assert_eq!(rules_label(&100.0), "100");
        assert_eq!(rules_label(&10_000.0), "10k");
        assert_eq!(rules_label(&100_000.0), "100k");
    }

    #[test]
    fn draws_a_png() {
        // No skip without the font: `cargo xtask setup` installs it, and
        // the error below names it and the package.
        let s = |m: f64| Spread {
            median: m,
            min: m - 0.02,
            max: m + 0.01,
            n: 3,
        };
        let panel = |t: &str| Panel {
            title: t.into(),
            series: vec![
                Series {
                    name: "faultbpf".into(),
                    points: vec![(1, s(0.99)), (10_000, s(0.98)), (65_536, s(0.99))],
                },
                Series {
                    name: "nft linear chain".into(),
                    points: vec![(1, s(0.97)), (10_000, s(0.03)), (65_536, s(0.01))],
                },
            ],
        };
        let path = std::env::temp_dir().join(format!("fbb-plot-{}.png", std::process::id()));
        throughput_vs_rules(&path, &[panel("on"), panel("off")])
            .unwrap_or_else(|e| panic!("{e:#}"));
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
