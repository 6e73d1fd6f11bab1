//! The report's PNG plots (plotters, bitmap backend). Text goes through ab_glyph with a TrueType
//! font read at run time ([`colloquy_benches::register_plot_font`]: `COLLOQUY_BENCH_FONT`, else
//! DejaVu Sans or Liberation Sans where the system has them), so no font lookup library is
//! needed; without a font the plots are skipped.

use std::path::Path;

use anyhow::anyhow;
use hdrhistogram::Histogram;
use plotters::prelude::*;

const FONT: &str = "sans-serif";

/// Registers the font (shared with the criterion benches); `false` when none is found.
pub fn load_font() -> bool {
    colloquy_benches::register_plot_font()
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Turn latency by percentile, one line per named histogram (microseconds), log scale.
pub fn latency(path: &Path, title: &str, series: &[(String, &Histogram<u64>)]) -> anyhow::Result<()> {
    let quantiles: Vec<f64> = (0..=99).map(f64::from).chain([99.5, 99.9]).collect();
    let lines: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| {
            let points = quantiles.iter().map(|q| (*q, h.value_at_quantile(q / 100.0) as f64 / 1000.0)).collect();
            (name.clone(), points)
        })
        .collect();
    let values = lines.iter().flat_map(|(_, points)| points.iter().map(|p| p.1));
    let (low, high) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lines.is_empty() || high <= 0.0 {
        return Ok(());
    }
    let root = BitMapBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..100f64, ((low * 0.8).max(0.001)..high * 1.25).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("turn latency (ms, log scale)")
        .label_style((FONT, 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (index, (name, points)) in lines.into_iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Turns/s by number of clients, one line per system, both axes log scale.
pub fn throughput(path: &Path, series: &[(String, Vec<(usize, f64)>)]) -> anyhow::Result<()> {
    let lines: Vec<_> = series.iter().filter(|(_, points)| points.iter().any(|p| p.1 > 0.0)).collect();
    let max_clients = lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.0)).max().unwrap_or(1).max(2);
    let values = lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)).filter(|v| *v > 0.0);
    let (low, high) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lines.is_empty() {
        return Ok(());
    }
    let root = BitMapBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Turns per second by concurrency (same mock, same run)", (FONT, 24))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0.8f64..max_clients as f64 * 1.25).log_scale(),
            ((low * 0.5).max(0.1)..high * 2.0).log_scale(),
        )
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (log scale)")
        .y_desc("turns/s (log scale)")
        .label_style((FONT, 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (index, (name, points)) in lines.into_iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let points: Vec<(f64, f64)> = points.iter().filter(|p| p.1 > 0.0).map(|(c, t)| (*c as f64, *t)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled()))).map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
