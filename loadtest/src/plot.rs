//! PNG plots of fleet runs (plotters, bitmap backend). Text is drawn with
//! DejaVu Sans from the system (Debian's `fonts-dejavu-core`): plotters'
//! own font loading needs fontconfig's C library, which this workspace
//! does without.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::fleetrun::{BoxError, RunResults};

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers the font once; an error names the package to install.
fn font() -> Result<(), BoxError> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = FONT_PATHS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or_else(|| {
                "no DejaVu Sans font for the plots (apt-get install fonts-dejavu-core)".to_owned()
            })?;
        // plotters keeps fonts for the process's life.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "the DejaVu font did not load".to_owned())
    })
    .clone()
    .map_err(Into::into)
}

/// Images done and layers fetched over time (top), queue lag (bottom).
pub fn progress(r: &RunResults, title: &str, path: &Path) -> Result<(), BoxError> {
    font()?;
    let root = BitMapBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(420);
    let t_max = r.samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let done_max = r
        .samples
        .iter()
        .map(|s| s.images_done.max(s.layers_fetched))
        .max()
        .unwrap_or(1)
        .max(1);
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("{title}: first pass"), ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0u64..done_max + done_max / 20)?;
    chart
        .configure_mesh()
        .x_desc("seconds since registration began")
        .y_desc("count")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            r.samples.iter().map(|s| (s.t_s, s.images_done)),
            BLUE.stroke_width(2),
        ))?
        .label("images done")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            r.samples.iter().map(|s| (s.t_s, s.layers_fetched)),
            RED.stroke_width(2),
        ))?
        .label("unique layers fetched")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;

    let lag_max = r
        .samples
        .iter()
        .map(|s| s.queue_pending + s.queue_in_flight)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("queue lag", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0u64..lag_max + lag_max / 20)?;
    chart
        .configure_mesh()
        .x_desc("seconds since registration began")
        .y_desc("jobs")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            r.samples.iter().map(|s| (s.t_s, s.queue_pending)),
            BLUE.stroke_width(2),
        ))?
        .label("pending (not delivered)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            r.samples.iter().map(|s| (s.t_s, s.queue_in_flight)),
            GREEN.stroke_width(2),
        ))?
        .label("in flight")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Layers per second of the first pass against the number of workers.
pub fn scaling(runs: &[RunResults], title: &str, path: &Path) -> Result<(), BoxError> {
    font()?;
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let w_max = runs.iter().map(|r| r.workers).max().unwrap_or(1).max(1) as u32;
    let y_max = runs.iter().map(|r| r.layers_per_s).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: scaling with workers"), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0u32..w_max + 1, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("worker processes")
        .y_desc("unique layers per second")
        .draw()?;
    let points: Vec<(u32, f64)> = runs.iter().map(|r| (r.workers as u32, r.layers_per_s)).collect();
    chart.draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 5, BLUE.filled())))?;
    root.present()?;
    Ok(())
}
