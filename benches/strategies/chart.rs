//! The SVG chart: deliveries/s by strategy and concurrency, one row of panels per place, one
//! panel per scenario (under the storm: the other callers' deliveries/s).

use std::path::Path;

use plotters::prelude::*;

use crate::place::Place;
use crate::report::find_run;
use crate::run::Run;
use crate::scenario::Scenario;
use crate::strategy::Strategy;

const PANEL_HEIGHT: u32 = 260;

/// Deliveries/s by strategy and concurrency, a row of panels per place.
pub(crate) fn chart(
    path: &Path,
    runs: &[Run],
    places: &[Place],
    scenarios: &[Scenario],
    tasks: &[usize],
    subtitle: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // The strategies of a place (MariaDB has its own), and of the legend: those of any place.
    let at = |place: Place| -> Vec<Strategy> {
        Strategy::ALL
            .into_iter()
            .filter(|s| scenarios.iter().any(|&sc| s.runs(place, sc)))
            .collect()
    };
    let legend_entries: Vec<Strategy> = Strategy::ALL
        .into_iter()
        .filter(|&s| places.iter().any(|&p| at(p).contains(&s)))
        .collect();
    let legend_height = 16 + 24 * legend_entries.len().div_ceil(3) as u32;
    let height = 56 + PANEL_HEIGHT * places.len() as u32 + legend_height;
    let root = SVGBackend::new(path, (1280, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, rest) = root.split_vertically(56);
    let (body, legend) = rest.split_vertically(PANEL_HEIGHT * places.len() as u32);
    top.draw(&Text::new(
        "create_once against what a user writes by hand: deliveries/s by strategy and tasks",
        (16, 8),
        ("sans-serif", 22).into_font().color(&BLACK),
    ))?;
    top.draw(&Text::new(
        format!("{subtitle}; hollow bar: the strategy gave errors or wrong rows there"),
        (16, 34),
        ("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
    ))?;

    let panels = body.split_evenly((places.len(), scenarios.len()));
    for (i, panel) in panels.iter().enumerate() {
        let place = places[i / scenarios.len()];
        let scenario = scenarios[i % scenarios.len()];
        let max = runs
            .iter()
            .filter(|r| r.place == place && r.scenario == scenario)
            .map(Run::per_second)
            .fold(0.0_f64, f64::max)
            .max(1.0)
            * 1.12;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{}: {}", place.short(), scenario.name()),
                ("sans-serif", 15),
            )
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0_f64..tasks.len() as f64, 0.0..max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(5)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 12))
            .draw()?;
        let here = at(place);
        let width = 0.8 / here.len() as f64;
        for (g, &t) in tasks.iter().enumerate() {
            for (s, &strategy) in here.iter().enumerate() {
                let Some(run) = find_run(runs, place, scenario, strategy, t) else {
                    continue;
                };
                let x0 = g as f64 + 0.1 + s as f64 * width;
                let style = if run.correct() && run.errors == 0 {
                    color(strategy).filled()
                } else {
                    color(strategy).stroke_width(2)
                };
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, run.per_second())],
                    style,
                )))?;
            }
            let (px, py) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
            root.draw(&Text::new(
                format!("{t} tasks"),
                (px - 22, py + 6),
                ("sans-serif", 13).into_font().color(&BLACK),
            ))?;
        }
    }

    for (i, strategy) in legend_entries.into_iter().enumerate() {
        let (x, y) = (16 + (i as i32 % 3) * 420, 10 + (i as i32 / 3) * 24);
        legend.draw(&Rectangle::new(
            [(x, y), (x + 14, y + 14)],
            color(strategy).filled(),
        ))?;
        legend.draw(&Text::new(
            strategy.name(),
            (x + 20, y),
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
        Strategy::CrateLocked => RGBColor(174, 199, 232),
        Strategy::Transaction => RGBColor(255, 127, 14),
        Strategy::LookThenTransaction => RGBColor(214, 39, 40),
        Strategy::OnConflict => RGBColor(44, 160, 44),
        Strategy::Floor => RGBColor(127, 127, 127),
        Strategy::SameStatements => RGBColor(148, 103, 189),
        Strategy::InsertIgnore => RGBColor(23, 190, 207),
        Strategy::OnDuplicateKey => RGBColor(188, 189, 34),
        Strategy::LockTables => RGBColor(140, 86, 75),
        Strategy::GetLock => RGBColor(227, 119, 194),
        Strategy::Naive => RGBColor(0, 0, 0),
    }
}
