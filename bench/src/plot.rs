//! PNG plots: latency by percentile (HDR style: the x axis counts nines), and deliveries over
//! time. Text is drawn with a system TrueType font (DejaVu Sans, Debian's fonts-dejavu-core).

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn register_font() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    let mut found = false;
    for path in FONTS {
        if let Ok(bytes) = std::fs::read(path) {
            found = true;
            ONCE.call_once(|| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
            });
            break;
        }
    }
    if !found {
        bail!("no font for the plot: install fonts-dejavu-core");
    }
    Ok(())
}

/// Latency (µs, log scale) against percentile, with the x axis in nines: 0 = p0, 1 = p90,
/// 2 = p99, 3 = p99.9.
pub fn latency(path: &Path, label: &str, hist: &Histogram<u64>) -> anyhow::Result<()> {
    register_font()?;
    let points: Vec<(f64, f64)> = hist
        .iter_quantiles(2)
        .map(|v| {
            let q: f64 = v.quantile_iterated_to().min(0.99999);
            (-(1.0 - q).log10(), v.value_iterated_to() as f64 / 1e3)
        })
        .collect();
    if points.is_empty() {
        bail!("no latencies to plot");
    }
    let ymax = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
    let ymin = points.iter().map(|p| p.1).fold(f64::MAX, f64::min).max(1.0) / 1.2;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("latency by percentile {label}"), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..5f64, (ymin..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_label_formatter(&|x| match x.round() as i32 {
            0 => "p0".into(),
            1 => "p90".into(),
            2 => "p99".into(),
            3 => "p99.9".into(),
            4 => "p99.99".into(),
            _ => "p99.999".into(),
        })
        .x_labels(6)
        .draw()?;
    chart.draw_series(LineSeries::new(points, &BLUE))?;
    root.present().context("writing the plot")?;
    Ok(())
}

/// Deliveries per second over the run.
pub fn timeline(path: &Path, label: &str, per_interval: &BTreeMap<u64, u64>) -> anyhow::Result<()> {
    register_font()?;
    let Some((&start, _)) = per_interval.first_key_value() else {
        bail!("no deliveries to plot");
    };
    let scale = 1e9 / crate::track::TIMELINE_NS as f64;
    let points: Vec<(f64, f64)> = per_interval
        .iter()
        .map(|(&t, &n)| ((t - start) as f64 / scale, n as f64 * scale))
        .collect();
    let xmax = points.last().map_or(1.0, |p| p.0).max(0.1) * 1.05;
    let ymax = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("deliveries per second {label}"), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("deliveries/s")
        .draw()?;
    chart.draw_series(LineSeries::new(points, &BLUE))?;
    root.present().context("writing the plot")?;
    Ok(())
}

/// Each process's RSS (MiB) over the run (minutes), one panel per process so that small ones
/// keep their own scale.
pub fn rss(
    path: &Path,
    label: &str,
    series: &BTreeMap<String, Vec<(f64, f64)>>,
) -> anyhow::Result<()> {
    register_font()?;
    if series.is_empty() {
        bail!("no samples to plot");
    }
    let height = 220 * series.len() as u32 + 40;
    let root = BitMapBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&format!("RSS over the soak {label}"), ("sans-serif", 22))?;
    let panels = root.split_evenly((series.len(), 1));
    for (panel, (name, points)) in panels.iter().zip(series) {
        let xmax = points.iter().map(|p| p.0).fold(0.1, f64::max) * 1.02;
        let ymax = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(name, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .y_desc("RSS (MiB)")
            .draw()?;
        chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE))?;
    }
    root.present().context("writing the plot")?;
    Ok(())
}
