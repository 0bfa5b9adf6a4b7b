//! The bench's plots, as PNG and SVG, drawn with `plotters`:
//! - `convergence-NAME`: per problem, the energy of every iteration of each run against the
//!   iteration with the reference as a dashed line (top), and `|E - E0| / |E0|` on a log scale
//!   (bottom);
//! - `scaling`: the final relative error (left) and the time per iteration (right) against the
//!   number of sites, one line per lattice family and schedule, both on log scales.
//!
//! Text is rendered with DejaVu Sans embedded in the binary (`assets/fonts`, Bitstream Vera
//! licence) through plotters' `ab_glyph` feature, so no system font or library is needed; PNGs
//! are drawn into an RGB buffer and encoded with the `png` crate.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::{family, BenchRecord, BenchReport};
use crate::error::{Error, Result};
use crate::run::write_atomic;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The embedded file is a valid TrueType font; a failure here is a build error.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn plot_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Io {
        file: what.to_string(),
        message: format!("plotting failed: {e}"),
    }
}

/// The colour of the `i`-th series.
fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// The marker of the `k`-th schedule at `at` (pixels, relative to an `EmptyElement`): a filled
/// circle, a triangle, a cross, a square outline.
fn marker<DB: DrawingBackend>(
    k: usize,
    at: (i32, i32),
    c: RGBColor,
) -> DynElement<'static, DB, (i32, i32)> {
    match k % 4 {
        0 => Circle::new(at, 4, c.filled()).into_dyn(),
        1 => TriangleMarker::new(at, 6, c.filled()).into_dyn(),
        2 => Cross::new(at, 5, c.stroke_width(2)).into_dyn(),
        _ => Rectangle::new(
            [(at.0 - 4, at.1 - 4), (at.0 + 4, at.1 + 4)],
            c.stroke_width(2),
        )
        .into_dyn(),
    }
}

/// Renders `draw` as SVG text and as PNG bytes of `size` pixels.
fn render(
    size: (u32, u32),
    draw: &dyn Fn(&dyn PlotArea) -> DrawResult<()>,
) -> DrawResult<(String, Vec<u8>)> {
    register_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root)?;
        root.present()?;
    }
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw(&root)?;
        root.present()?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, size.0, size.1);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        w.write_image_data(&rgb)?;
        w.finish()?;
    }
    Ok((svg, png_bytes))
}

/// A drawing area of either backend, so that one drawing function serves both.
trait PlotArea {
    fn convergence(&self, p: &Convergence) -> DrawResult<()>;
    fn scaling(&self, s: &Scaling) -> DrawResult<()>;
}

impl<DB: DrawingBackend> PlotArea for DrawingArea<DB, Shift>
where
    DB::ErrorType: 'static,
{
    fn convergence(&self, p: &Convergence) -> DrawResult<()> {
        draw_convergence(self, p)
    }
    fn scaling(&self, s: &Scaling) -> DrawResult<()> {
        draw_scaling(self, s)
    }
}

/// The data of one convergence plot.
pub struct Convergence {
    pub problem: String,
    pub reference: Option<(f64, String)>,
    /// `(scheme, [(iteration, energy)])`.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// One point of the scaling plot: `(n_sites, relative error, seconds per iteration)`.
pub type ScalingPoint = (f64, Option<f64>, f64);

/// One line of the scaling plot: a lattice family (its colour) and a schedule (its marker and
/// dash), so that 7 families x 3 schedules stay distinguishable.
pub struct ScalingSeries {
    pub label: String,
    pub family: usize,
    pub scheme: usize,
    pub points: Vec<ScalingPoint>,
}

/// The data of the scaling plot.
pub struct Scaling {
    pub series: Vec<ScalingSeries>,
}

fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    (lo <= hi).then_some((lo, hi))
}

/// Padded linear range; a flat range is widened.
fn pad(lo: f64, hi: f64) -> (f64, f64) {
    let w = (hi - lo).max(1e-9 * lo.abs().max(1.0));
    (lo - 0.05 * w, hi + 0.05 * w)
}

/// Range of a log axis covering `lo..hi` (positive): whole decades, padded a little so that
/// plotters (which labels only the decades inside the range) labels both ends.
fn log_range(lo: f64, hi: f64) -> (f64, f64) {
    let (a, b) = (lo.log10().floor(), hi.log10().ceil());
    let b = if b <= a { a + 1.0 } else { b };
    (0.8 * 10f64.powf(a), 1.25 * 10f64.powf(b))
}

fn draw_convergence<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    p: &Convergence,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (w, h) = root.dim_in_pixel();
    let (top, bottom) = root.split_vertically(h / 2);
    let all = || p.series.iter().flat_map(|(_, pts)| pts.iter());
    let (x0, x1) = range(all().map(|q| q.0)).unwrap_or((0.0, 1.0));
    let (x0, x1) = (x0, x1.max(x0 + 1.0));
    let mut ys: Vec<f64> = all().map(|q| q.1).collect();
    if let Some((e, _)) = &p.reference {
        ys.push(*e);
    }
    let (y0, y1) = range(ys.into_iter()).unwrap_or((0.0, 1.0));
    let (y0, y1) = pad(y0, y1);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("{}: energy per iteration", p.problem),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc("energy")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (i, (scheme, pts)) in p.series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
            .label(scheme.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    if let Some((e, label)) = &p.reference {
        chart
            .draw_series(DashedLineSeries::new(
                [(x0, *e), (x1, *e)],
                8,
                5,
                BLACK.stroke_width(1),
            ))?
            .label(format!("{label} {e:.6}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;

    let Some((e0, label)) = &p.reference else {
        bottom.draw(&Text::new(
            "no reference energy: relative error not shown",
            (w as i32 / 4, h as i32 / 4),
            ("sans-serif", 18),
        ))?;
        return Ok(());
    };
    let rel: Vec<(String, Vec<(f64, f64)>)> = p
        .series
        .iter()
        .map(|(s, pts)| {
            let r = pts
                .iter()
                .map(|&(i, e)| (i, ((e - e0) / e0.abs()).abs()))
                .filter(|q| q.1 > 0.0 && q.1.is_finite())
                .collect();
            (s.clone(), r)
        })
        .collect();
    let (r0, r1) =
        range(rel.iter().flat_map(|(_, v)| v.iter().map(|q| q.1))).unwrap_or((1e-6, 1.0));
    let (r0, r1) = log_range(r0, r1);
    let mut chart = ChartBuilder::on(&bottom)
        .caption(format!("|E - E0| / |E0| (E0: {label})"), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, (r0..r1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc("relative error")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(12)
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    for (i, (scheme, pts)) in rel.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
            .label(scheme.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

fn draw_scaling<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, s: &Scaling) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (w, _) = root.dim_in_pixel();
    let (left, right) = root.split_horizontally(w / 2);
    let all = || s.series.iter().flat_map(|ser| ser.points.iter());
    let (n0, n1) = range(all().map(|q| q.0)).unwrap_or((1.0, 2.0));
    // A linear axis from 0: sizes of 6 to 64 sites read better than on a log axis, whose
    // labels plotters only puts at decades.
    let (n0, n1) = (0.0, (n1 + n0.min(4.0)) * 1.08);
    let n_formatter = |v: &f64| format!("{v:.0}");
    for (panel, area) in [(0, &left), (1, &right)] {
        let value = |q: &ScalingPoint| -> Option<f64> {
            if panel == 0 {
                q.1.map(f64::abs).filter(|r| *r > 0.0)
            } else {
                Some(q.2).filter(|t| *t > 0.0 && t.is_finite())
            }
        };
        let (v0, v1) = range(all().filter_map(value)).unwrap_or((1e-3, 1.0));
        let (v0, v1) = log_range(v0, v1);
        let (title, ydesc) = if panel == 0 {
            ("relative error against system size", "|E - E0| / |E0|")
        } else {
            (
                "time per iteration against system size",
                "seconds per iteration",
            )
        };
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(n0..n1, (v0..v1).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("sites N")
            .y_desc(ydesc)
            .x_label_formatter(&n_formatter)
            .y_labels(12)
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()?;
        for ser in &s.series {
            let c = color(ser.family);
            let mut xy: Vec<(f64, f64)> = ser
                .points
                .iter()
                .filter_map(|q| value(q).map(|v| (q.0, v)))
                .collect();
            xy.sort_by(|a, b| a.0.total_cmp(&b.0));
            let style = c.stroke_width(2);
            let anno = if ser.scheme == 0 {
                chart.draw_series(LineSeries::new(xy.iter().copied(), style))?
            } else {
                chart.draw_series(DashedLineSeries::new(
                    xy.iter().copied(),
                    4 + 4 * ser.scheme as u32,
                    4,
                    style,
                ))?
            };
            let scheme = ser.scheme;
            anno.label(ser.label.clone()).legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (20, 0)], style)
                    + marker(scheme, (10, 0), c)
            });
            chart.draw_series(
                xy.iter()
                    .map(|&p| EmptyElement::at(p) + marker(ser.scheme, (0, 0), c)),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    Ok(())
}

/// `(iteration, energy)` of every row of a run's `trace.csv`.
pub fn read_trace(dir: &Path) -> Result<Vec<(f64, f64)>> {
    let path = dir.join("trace.csv");
    let text = std::fs::read_to_string(&path).map_err(|e| super::io_err(&path, e))?;
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut f = line.split(',');
        let (Some(i), Some(e)) = (f.next(), f.next()) else {
            continue;
        };
        if let (Ok(i), Ok(e)) = (i.parse::<f64>(), e.parse::<f64>()) {
            out.push((i, e));
        }
    }
    Ok(out)
}

fn write_pair(
    out: &Path,
    stem: &str,
    size: (u32, u32),
    draw: &dyn Fn(&dyn PlotArea) -> DrawResult<()>,
) -> Result<()> {
    let (svg, png) = render(size, draw).map_err(|e| plot_err(stem, e))?;
    write_atomic(&out.join(format!("{stem}.svg")), svg.as_bytes())?;
    write_atomic(&out.join(format!("{stem}.png")), &png)
}

/// File-name-safe form of a problem name.
fn stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `convergence-NAME.{png,svg}` for every problem and `scaling.{png,svg}`.
pub fn write_plots(out: &Path, report: &BenchReport) -> Result<()> {
    let mut by_problem: BTreeMap<&str, Vec<&BenchRecord>> = BTreeMap::new();
    for r in &report.records {
        by_problem.entry(&r.problem).or_default().push(r);
    }
    for (name, recs) in &by_problem {
        let mut series = Vec::new();
        for r in recs {
            series.push((r.scheme.clone(), read_trace(Path::new(&r.run_dir))?));
        }
        let first = recs[0];
        let conv = Convergence {
            problem: name.to_string(),
            reference: first
                .reference_energy
                .map(|e| (e, first.reference_source.label().to_string())),
            series,
        };
        write_pair(
            out,
            &format!("convergence-{}", stem(name)),
            (900, 800),
            &|a| a.convergence(&conv),
        )?;
    }
    let mut families: Vec<String> = report.records.iter().map(family).collect();
    families.sort();
    families.dedup();
    let mut schemes: Vec<&str> = Vec::new();
    for r in &report.records {
        if !schemes.contains(&r.scheme.as_str()) {
            schemes.push(&r.scheme);
        }
    }
    let mut groups: BTreeMap<(usize, usize), Vec<ScalingPoint>> = BTreeMap::new();
    for r in &report.records {
        let f = families
            .iter()
            .position(|x| *x == family(r))
            .expect("listed");
        let k = schemes.iter().position(|x| *x == r.scheme).expect("listed");
        groups.entry((f, k)).or_default().push((
            r.n_sites as f64,
            r.relative_error,
            r.seconds_per_iteration,
        ));
    }
    let scaling = Scaling {
        series: groups
            .into_iter()
            .map(|((f, k), points)| ScalingSeries {
                label: format!("{} {}", families[f], schemes[k]),
                family: f,
                scheme: k,
                points,
            })
            .collect(),
    };
    write_pair(out, "scaling", (1400, 600), &|a| a.scaling(&scaling))
}
