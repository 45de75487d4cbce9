//! The SVG chart: deliveries/s by strategy and concurrency, one panel per scenario, and the
//! storm's p99.

use std::path::Path;

use plotters::prelude::*;

use crate::TASKS;
use crate::report::{find_run, ms};
use crate::run::Run;
use crate::scenario::Scenario;
use crate::strategy::Strategy;

/// Deliveries/s by strategy and concurrency, one panel per scenario, and the storm's p99.
pub(crate) fn chart(
    path: &Path,
    runs: &[Run],
    server: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1280, 860)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, rest) = root.split_vertically(56);
    let (body, legend) = rest.split_vertically(770);
    top.draw(&Text::new(
        "create_once side by side: deliveries/s by strategy and concurrency (pool of 8)",
        (16, 8),
        ("sans-serif", 22).into_font().color(&BLACK),
    ))?;
    top.draw(&Text::new(
        format!("{server}; hollow bar: the strategy gave errors or wrong rows there"),
        (16, 34),
        ("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
    ))?;

    let panels = body.split_evenly((2, 3));
    for (i, panel) in panels.iter().enumerate() {
        let storm_p99 = i == Scenario::ALL.len();
        let scenario = Scenario::ALL.get(i).copied().unwrap_or(Scenario::Storm);
        let value = |run: &Run| {
            if storm_p99 {
                ms(run.percentile(0.99))
            } else {
                run.per_second()
            }
        };
        let max = runs
            .iter()
            .filter(|r| r.scenario == scenario)
            .map(value)
            .fold(0.0_f64, f64::max)
            .max(1.0)
            * 1.12;
        let caption = if storm_p99 {
            "hot-key storm: other callers' p99 (ms)".to_owned()
        } else {
            scenario.name()
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(26)
            .y_label_area_size(58)
            .build_cartesian_2d(0.0_f64..TASKS.len() as f64, 0.0..max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(6)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 12))
            .draw()?;
        let width = 0.8 / Strategy::ALL.len() as f64;
        for (g, &tasks) in TASKS.iter().enumerate() {
            for (s, &strategy) in Strategy::ALL.iter().enumerate() {
                let Some(run) = find_run(runs, scenario, strategy, tasks) else {
                    continue;
                };
                let x0 = g as f64 + 0.1 + s as f64 * width;
                let style = if run.correct() && run.errors == 0 {
                    color(strategy).filled()
                } else {
                    // Hollow bars: the strategy gave errors or wrong rows here.
                    color(strategy).stroke_width(2)
                };
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, value(run))],
                    style,
                )))?;
            }
            let (px, py) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
            root.draw(&Text::new(
                format!("{tasks} task{}", if tasks == 1 { "" } else { "s" }),
                (px - 22, py + 6),
                ("sans-serif", 13).into_font().color(&BLACK),
            ))?;
        }
    }

    for (i, strategy) in Strategy::ALL.into_iter().enumerate() {
        let x = 16 + i as i32 * 208;
        legend.draw(&Rectangle::new(
            [(x, 8), (x + 14, 22)],
            color(strategy).filled(),
        ))?;
        legend.draw(&Text::new(
            strategy.name(),
            (x + 20, 8),
            ("sans-serif", 14).into_font().color(&BLACK),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// Each strategy's colour in the chart.
fn color(strategy: Strategy) -> RGBColor {
    match strategy {
        Strategy::Crate => RGBColor(31, 119, 180),
        Strategy::Sqlx => RGBColor(148, 103, 189),
        Strategy::Floor => RGBColor(127, 127, 127),
        Strategy::OnConflict => RGBColor(44, 160, 44),
        Strategy::Naive => RGBColor(214, 39, 40),
        Strategy::LockTable => RGBColor(255, 127, 14),
    }
}
