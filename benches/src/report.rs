//! Rows of the comparison (berth beside direct and nginx, measured in one run), their ratios
//! and goals, rendered as markdown tables and as a PNG chart of speed relative to direct.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Better {
    /// Throughput, requests per second.
    #[default]
    Higher,
    /// Durations, latencies.
    Lower,
}

/// What a goal compares berth with.
#[derive(Debug, Clone, Copy)]
pub enum Against {
    /// The same work without a proxy.
    Direct,
    /// nginx with the streaming configuration.
    NginxStreaming,
}

/// A goal and whether this run met it.
#[derive(Debug, Clone)]
pub struct Goal {
    /// `≥ 0.95× direct`.
    pub text: String,
    /// Met in this run.
    pub met: bool,
}

/// One measured scenario. Every figure of a row comes from the same run.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Section heading the row is listed under.
    pub section: &'static str,
    /// Scenario name (stable, used to compare reports).
    pub scenario: String,
    /// Unit of the figures: `MB/s`, `s`, `req/s`, `ms`.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
    /// Without a proxy.
    pub direct: Option<f64>,
    /// Through berth.
    pub berth: f64,
    /// Through nginx, streaming configuration.
    pub nginx_streaming: Option<f64>,
    /// Through nginx, the seed recipe's configuration.
    pub nginx_seed: Option<f64>,
    /// berth's peak RSS during the scenario.
    pub berth_rss_kib: Option<u64>,
    /// nginx's (streaming) peak RSS during the scenario, master and workers summed.
    pub nginx_rss_kib: Option<u64>,
    /// The goal this row is held to.
    pub goal: Option<Goal>,
    /// Drawn in the chart (rows with a direct figure only).
    pub chart: bool,
}

impl Row {
    /// berth's figure divided by `other`.
    pub fn ratio(&self, other: Option<f64>) -> Option<f64> {
        other.filter(|o| *o > 0.0).map(|o| self.berth / o)
    }

    /// Holds the row to `bound` times the figure of `against` (at least for throughput, at
    /// most for durations).
    #[must_use]
    pub fn goal(mut self, against: Against, bound: f64) -> Row {
        let (name, base) = match against {
            Against::Direct => ("direct", self.direct),
            Against::NginxStreaming => ("nginx streaming", self.nginx_streaming),
        };
        let ratio = self.ratio(base);
        let (sign, met) = match self.better {
            Better::Higher => ("≥", ratio.is_some_and(|r| r >= bound)),
            Better::Lower => ("≤", ratio.is_some_and(|r| r <= bound)),
        };
        self.goal = Some(Goal {
            text: format!("{sign} {bound:.2}× {name}"),
            met,
        });
        self
    }

    /// Holds the row to a goal that is not a ratio of this row's own columns.
    #[must_use]
    pub fn goal_text(mut self, text: String, met: bool) -> Row {
        self.goal = Some(Goal { text, met });
        self
    }

    /// How many times faster than direct `figure` is (higher is better in either unit).
    fn speed_vs_direct(&self, figure: Option<f64>) -> Option<f64> {
        let (direct, figure) = (self.direct?, figure?);
        if direct <= 0.0 || figure <= 0.0 {
            return None;
        }
        Some(match self.better {
            Better::Higher => figure / direct,
            Better::Lower => direct / figure,
        })
    }
}

fn figure(unit: &str, v: Option<f64>) -> String {
    match v {
        None => "—".to_string(),
        Some(v) if unit == "s" || unit == "ms" && v < 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
    }
}

fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "—".to_string(), |r| format!("{r:.2}×"))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "—".to_string(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

/// The rows as markdown, one table per section in the order they first appear.
pub fn markdown(rows: &[Row]) -> String {
    let mut sections: Vec<&str> = Vec::new();
    for r in rows {
        if !sections.contains(&r.section) {
            sections.push(r.section);
        }
    }
    let mut out = String::new();
    for section in sections {
        let rows: Vec<&Row> = rows.iter().filter(|r| r.section == section).collect();
        let rss = rows
            .iter()
            .any(|r| r.berth_rss_kib.is_some() || r.nginx_rss_kib.is_some());
        let _ = writeln!(out, "### {section}\n");
        let _ = write!(
            out,
            "| scenario | unit | direct | berth | nginx streaming | nginx seed recipe | berth ÷ direct | berth ÷ nginx streaming | berth ÷ nginx seed | goal |"
        );
        let _ = writeln!(
            out,
            "{}",
            if rss {
                " berth peak RSS | nginx peak RSS |"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|{}",
            if rss { "---:|---:|" } else { "" }
        );
        for r in rows {
            let goal = r.goal.as_ref().map_or_else(String::new, |g| {
                format!("{} {}", g.text, if g.met { "✅ met" } else { "❌ not met" })
            });
            let _ = write!(
                out,
                "| `{}` | {}{} | {} | **{}** | {} | {} | {} | {} | {} | {goal} |",
                r.scenario,
                r.unit,
                match r.better {
                    Better::Higher => " ↑",
                    Better::Lower => " ↓",
                },
                figure(r.unit, r.direct),
                figure(r.unit, Some(r.berth)),
                figure(r.unit, r.nginx_streaming),
                figure(r.unit, r.nginx_seed),
                times(r.ratio(r.direct)),
                times(r.ratio(r.nginx_streaming)),
                times(r.ratio(r.nginx_seed)),
            );
            if rss {
                let _ = write!(
                    out,
                    " {} | {} |",
                    mib(r.berth_rss_kib),
                    mib(r.nginx_rss_kib)
                );
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// The goals of the rows, one line each.
pub fn goals(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        if let Some(g) = &r.goal {
            let _ = writeln!(
                out,
                "- `{}`: {} — {}",
                r.scenario,
                g.text,
                if g.met { "met" } else { "**not met**" }
            );
        }
    }
    out
}

/// A bar series of the chart: name, colour, and which figure of a row it shows.
type Series = (&'static str, RGBColor, fn(&Row) -> Option<f64>);

const WIDTH: u32 = 1400;
const LABELS: i32 = 330;
const ROW: i32 = 66;
const TOP: i32 = 90;
const BOTTOM: i32 = 60;
const RIGHT: i32 = 60;

/// Loads a TrueType font for the chart's text (plotters draws text with it).
///
/// # Errors
/// When no DejaVu Sans is installed.
fn register_font() -> Result<(), String> {
    const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
    let bytes = std::fs::read(FONT)
        .map_err(|e| format!("{FONT}: {e} (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into()))
        .map_err(|_| format!("{FONT} is not a usable TrueType font"))
}

/// Draws the chart rows (those with `chart` set) as horizontal bars of speed relative to
/// direct (1.0 = no proxy, higher is better), one group per scenario: berth, nginx streaming,
/// nginx seed recipe.
///
/// # Errors
/// When the font is missing or the PNG cannot be written.
pub fn chart(rows: &[Row], title: &str, out: &Path) -> Result<(), String> {
    register_font()?;
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.chart && r.direct.is_some())
        .collect();
    let height = (TOP + BOTTOM + ROW * rows.len() as i32) as u32;
    let root = BitMapBackend::new(out, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let series: [Series; 3] = [
        ("berth", RGBColor(0x1f, 0x6f, 0xb4), |r| Some(r.berth)),
        ("nginx streaming", RGBColor(0xf0, 0x8c, 0x28), |r| {
            r.nginx_streaming
        }),
        ("nginx seed recipe", RGBColor(0xa0, 0xa0, 0xa0), |r| {
            r.nginx_seed
        }),
    ];
    let max = rows
        .iter()
        .flat_map(|r| series.iter().filter_map(|s| r.speed_vs_direct((s.2)(r))))
        .fold(1.0_f64, f64::max);
    let scale_max = (max * 4.0).ceil() / 4.0 + 0.25;
    let plot_w = WIDTH as i32 - LABELS - RIGHT;
    let x = |v: f64| LABELS + (v / scale_max * f64::from(plot_w)) as i32;
    let text = |size: i32| ("sans-serif", size).into_font().color(&BLACK);
    let draw = |e: Result<(), DrawingAreaErrorKind<_>>| e.map_err(|e| e.to_string());

    draw(root.draw(&Text::new(title.to_string(), (20, 18), text(22))))?;
    // Legend.
    let mut lx = LABELS;
    for (name, color, _) in &series {
        draw(root.draw(&Rectangle::new([(lx, 56), (lx + 18, 70)], color.filled())))?;
        draw(root.draw(&Text::new(name.to_string(), (lx + 24, 55), text(16))))?;
        lx += 40 + 9 * name.len() as i32;
    }
    // Grid and axis.
    let axis_y = TOP + ROW * rows.len() as i32;
    let mut tick = 0.0;
    while tick <= scale_max + 1e-9 {
        let style = if (tick - 1.0_f64).abs() < 1e-9 {
            BLACK.stroke_width(2)
        } else {
            RGBColor(0xdd, 0xdd, 0xdd).stroke_width(1)
        };
        draw(root.draw(&PathElement::new(
            vec![(x(tick), TOP - 6), (x(tick), axis_y)],
            style,
        )))?;
        draw(root.draw(&Text::new(
            format!("{tick:.2}"),
            (x(tick), axis_y + 8),
            text(14).pos(Pos::new(HPos::Center, VPos::Top)),
        )))?;
        tick += 0.25;
    }
    draw(root.draw(&Text::new(
        "× direct (1.00 = no proxy; higher is better; durations inverted)".to_string(),
        (x(scale_max / 2.0), axis_y + 32),
        text(15).pos(Pos::new(HPos::Center, VPos::Top)),
    )))?;
    // Bars.
    let bar = (ROW - 12) / 3;
    for (i, r) in rows.iter().enumerate() {
        let top = TOP + ROW * i as i32;
        draw(root.draw(&Text::new(
            r.scenario.clone(),
            (LABELS - 10, top + ROW / 2 - 4),
            text(15).pos(Pos::new(HPos::Right, VPos::Center)),
        )))?;
        for (k, (_, color, get)) in series.iter().enumerate() {
            let Some(v) = r.speed_vs_direct(get(r)) else {
                continue;
            };
            let y0 = top + 4 + bar * k as i32;
            draw(root.draw(&Rectangle::new(
                [(x(0.0), y0), (x(v), y0 + bar - 2)],
                color.filled(),
            )))?;
            draw(root.draw(&Text::new(
                format!("{v:.2}"),
                (x(v) + 4, y0 + bar / 2 - 1),
                text(12).pos(Pos::new(HPos::Left, VPos::Center)),
            )))?;
        }
    }
    root.present().map_err(|e| e.to_string())
}
