//! A scenario's results: a JSON report, a Markdown table, and an SVG chart
//! of latency percentiles against concurrency where there is one.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Serialize)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

/// One line of the latency chart: a percentile per concurrency.
#[derive(Debug, Serialize)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(usize, f64)>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub machine: Value,
    pub tables: Vec<Table>,
    /// The headline figures, as numbers.
    pub figures: Value,
    pub notes: Vec<String>,
    #[serde(skip)]
    pub curves: Vec<Curve>,
}

impl Report {
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            machine: serde_json::json!({
                "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
                "os": std::env::consts::OS,
                "at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            }),
            tables: Vec::new(),
            figures: Value::Object(Default::default()),
            notes: Vec::new(),
            curves: Vec::new(),
        }
    }

    pub fn figure(&mut self, name: &str, value: impl Serialize) {
        if let (Value::Object(map), Ok(v)) = (&mut self.figures, serde_json::to_value(value)) {
            map.insert(name.to_owned(), v);
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("## {}\n\n", self.scenario);
        for table in &self.tables {
            out.push_str(&format!(
                "### {}\n\n| {} |\n|{}\n",
                table.title,
                table.headers.join(" | "),
                "---|".repeat(table.headers.len())
            ));
            for row in &table.rows {
                out.push_str(&format!("| {} |\n", row.join(" | ")));
            }
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(&format!("- {note}\n"));
        }
        out
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let stem = self.scenario.replace(' ', "-");
        std::fs::write(
            dir.join(format!("{stem}.json")),
            serde_json::to_string_pretty(self)?,
        )?;
        std::fs::write(dir.join(format!("{stem}.md")), self.markdown())?;
        if !self.curves.is_empty() {
            self.chart(&dir.join(format!("{stem}-latency.svg")))?;
        }
        Ok(())
    }

    /// Latency percentiles (ms, log scale) against concurrency.
    fn chart(&self, path: &Path) -> anyhow::Result<()> {
        let max_x = self
            .curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.0))
            .max()
            .unwrap_or(1);
        let max_y = self
            .curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.1))
            .fold(1.0_f64, f64::max);
        let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: latency against concurrency", self.scenario),
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (1usize..max_x.max(2)).log_scale(),
                (0.1f64..max_y * 1.5).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("concurrent senders")
            .y_desc("latency (ms)")
            .draw()?;
        let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
        for (curve, color) in self.curves.iter().zip(colors.iter().cycle()) {
            let color = *color;
            chart
                .draw_series(LineSeries::new(
                    curve.points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(curve.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.draw_series(curve.points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

pub fn f1(v: f64) -> String {
    format!("{v:.1}")
}

pub fn f0(v: f64) -> String {
    format!("{v:.0}")
}

pub fn pct(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}
