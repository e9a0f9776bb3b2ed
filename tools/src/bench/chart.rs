//! The comparison as an SVG chart (plotters, SVG backend only): grouped
//! bars per workload, one bar per target, requests/s on top and the
//! target's CPU nanoseconds per request below, both on log scales. O_DIRECT
//! rows stay in the table only, to keep the chart readable.
#![forbid(unsafe_code)]

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::compare::{Backing, Cell, CompareReport};

const COLORS: [RGBColor; 10] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(158, 202, 225),
    RGBColor(214, 39, 40),
    RGBColor(255, 152, 150),
    RGBColor(44, 160, 44),
    RGBColor(152, 223, 138),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// A series: every cell with this label and backing.
fn series_key(c: &Cell) -> String {
    match c.target.backing {
        Backing::Null => format!("{} null", c.target.imp_name()),
        _ if c.target.writeback => format!("{} --writeback", c.target.imp_name()),
        _ => c.target.imp_name().to_string(),
    }
}

/// Write the chart to `path`.
pub fn write_svg(r: &CompareReport, path: &Path) -> Result<()> {
    let cells: Vec<&Cell> = r
        .cells
        .iter()
        .filter(|c| {
            !matches!(c.target.backing, Backing::Direct | Backing::Reflect) && c.report.is_some()
        })
        .collect();
    let mut workloads: Vec<&str> = Vec::new();
    for c in &r.cells {
        if !workloads.contains(&c.workload.name) {
            workloads.push(c.workload.name);
        }
    }
    let mut series: Vec<String> = Vec::new();
    for c in &cells {
        let k = series_key(c);
        if !series.contains(&k) {
            series.push(k);
        }
    }
    let root = SVGBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
    let (plots, side) = root.split_horizontally(1150);
    let (top, bottom) = plots.split_vertically(450);
    panel(
        &top,
        "requests/s (log scale; higher is better)",
        &workloads,
        &series,
        &cells,
        |c| c.rps(),
    )?;
    panel(
        &bottom,
        "target CPU ns per request (log scale; lower is better)",
        &workloads,
        &series,
        &cells,
        |c| c.target_ns(),
    )?;
    // Legend, in the right-hand strip.
    let err = |e| anyhow!("chart: {e:?}");
    side.draw(&Text::new("targets", (10, 40), ("sans-serif", 16)))
        .map_err(err)?;
    for (i, name) in series.iter().enumerate() {
        let y = 70 + i as i32 * 24;
        side.draw(&Rectangle::new(
            [(10, y), (26, y + 14)],
            COLORS[i % COLORS.len()].filled(),
        ))
        .map_err(err)?;
        side.draw(&Text::new(name.clone(), (34, y + 1), ("sans-serif", 13)))
            .map_err(err)?;
    }
    let notes = [
        "O_DIRECT rows: see compare.txt",
        "write rows: vblade acks from the",
        "page cache; xblade is durable",
        "unless --writeback",
    ];
    for (i, n) in notes.iter().enumerate() {
        side.draw(&Text::new(
            n.to_string(),
            (10, 90 + (series.len() as i32 + i as i32) * 24),
            ("sans-serif", 12),
        ))
        .map_err(err)?;
    }
    root.present().map_err(|e| anyhow!("chart: {e}"))?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    workloads: &[&str],
    series: &[String],
    cells: &[&Cell],
    value: impl Fn(&Cell) -> Option<f64>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("chart: {e:?}");
    let vals: Vec<f64> = cells.iter().filter_map(|c| value(c)).collect();
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if vals.is_empty() {
        (1.0, 10.0)
    } else {
        (
            10f64.powf((lo.max(1e-3) / 2.0).log10().floor()),
            10f64.powf((hi * 2.0).log10().ceil()),
        )
    };
    let n = workloads.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|v| super::report::thousands(v.round() as u64))
        .draw()
        .map_err(err)?;
    // Each group holds the bars of the series it has, in series order.
    let mut bars = Vec::new();
    for (wi, wl) in workloads.iter().enumerate() {
        let present: Vec<(usize, f64)> = series
            .iter()
            .enumerate()
            .filter_map(|(si, name)| {
                cells
                    .iter()
                    .find(|c| c.workload.name == *wl && series_key(c) == *name)
                    .and_then(|c| value(c))
                    .map(|v| (si, v))
            })
            .collect();
        let width = 0.8 / present.len().max(1) as f64;
        for (j, (si, v)) in present.into_iter().enumerate() {
            let x0 = wi as f64 + 0.1 + j as f64 * width;
            bars.push(Rectangle::new(
                [(x0, lo), (x0 + width * 0.88, v.max(lo))],
                COLORS[si % COLORS.len()].filled(),
            ));
        }
    }
    chart.draw_series(bars).map_err(err)?;
    // Workload names under each group.
    for (wi, wl) in workloads.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(wi as f64 + 0.5, lo));
        let (ox, oy) = area.get_base_pixel();
        area.draw(&Text::new(
            wl.to_string(),
            (px - ox - (wl.len() as i32 * 7) / 2, py - oy + 8),
            ("sans-serif", 14),
        ))
        .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::compare::{sample_report, Backing};
    use super::*;

    #[test]
    fn writes_an_svg() {
        let r = sample_report();
        let path = std::env::temp_dir().join(format!("xblade-chart-{}.svg", std::process::id()));
        write_svg(&r, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        if std::env::var_os("XBLADE_KEEP_CHART").is_none() {
            let _ = std::fs::remove_file(&path);
        }
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        assert!(svg.contains("xblade afpacket"));
        assert!(svg.contains("1K read w64"));
        assert!(
            svg.matches("<rect").count()
                > r.cells
                    .iter()
                    .filter(|c| !matches!(c.target.backing, Backing::Direct | Backing::Reflect))
                    .count()
        );
    }
}
