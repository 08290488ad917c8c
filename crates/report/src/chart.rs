//! Line charts on a log-x (step + 1) or linear axis, drawn once to SVG (for the HTML page) and
//! once to PNG, with labelled axes, a legend with swatches, shaded stage intervals, error bands
//! and vertical markers.

use plotters::coord::Shift;
use plotters::prelude::*;

/// The embedded font (DejaVu Sans) used for PNG text; SVG text names `sans-serif`.
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is valid (embedded at build time); registration only fails on a bad font.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub dashed: bool,
    /// Optional band `(x, low, high)` drawn under the line.
    pub band: Vec<(f64, f64, f64)>,
}

impl Series {
    pub fn line(label: impl Into<String>, points: Vec<(f64, f64)>, color: RGBColor) -> Self {
        Series {
            label: label.into(),
            points,
            color,
            dashed: false,
            band: vec![],
        }
    }
}

/// A shaded x-interval with a label (a developmental stage).
#[derive(Clone, Debug)]
pub struct Span {
    pub from: f64,
    pub to: f64,
    pub label: String,
    pub color: RGBColor,
}

#[derive(Clone, Debug)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Log scale on x (values must be positive: use step + 1).
    pub log_x: bool,
    pub series: Vec<Series>,
    pub spans: Vec<Span>,
    /// Vertical dashed markers (e.g. forms).
    pub markers: Vec<f64>,
    /// Marked points (e.g. forms on a PC-pair trajectory), drawn as open circles.
    pub dots: Vec<(f64, f64)>,
    /// Where the legend goes (pick a corner the data leaves free).
    pub legend: Corner,
    /// A fixed y range (e.g. 0..1 for fractions); None: fitted to the data.
    pub y_range: Option<(f64, f64)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Corner {
    #[default]
    UpperRight,
    UpperLeft,
    MiddleLeft,
    MiddleRight,
    LowerLeft,
    LowerRight,
}

impl Corner {
    fn position(self) -> SeriesLabelPosition {
        match self {
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
            Corner::MiddleLeft => SeriesLabelPosition::MiddleLeft,
            Corner::MiddleRight => SeriesLabelPosition::MiddleRight,
            Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("drawing {chart:?}: {msg}")]
pub struct ChartError {
    pub chart: String,
    pub msg: String,
}

/// A colour-blind-safe palette (Okabe-Ito), cycled.
pub fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(230, 159, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(213, 94, 0),
        RGBColor(240, 228, 66),
        RGBColor(0, 0, 0),
    ];
    C[i % C.len()]
}

fn bounds(c: &LineChart) -> Option<((f64, f64), (f64, f64))> {
    // Circled points (`dots`) count too, so that none falls outside the axes.
    let xs = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(c.dots.iter().map(|p| p.0))
        .filter(|x| x.is_finite() && (!c.log_x || *x > 0.0));
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    for x in xs {
        x0 = x0.min(x);
        x1 = x1.max(x);
    }
    let ys = c
        .series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .map(|p| p.1)
                .chain(s.band.iter().flat_map(|b| [b.1, b.2]))
        })
        .chain(c.dots.iter().map(|p| p.1));
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for y in ys.filter(|y| y.is_finite()) {
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !(x0.is_finite() && y0.is_finite()) {
        return None;
    }
    if x1 <= x0 {
        x1 = x0 * 2.0 + 1.0;
    }
    if let Some(r) = c.y_range {
        return Some(((x0, x1), r));
    }
    // A flat curve still gets a readable axis: at least 10 % of its level (or 1) around it.
    let span = (y1 - y0)
        .max(0.1 * y0.abs().max(y1.abs()))
        .max(if y1 == y0 && y0 == 0.0 { 1.0 } else { 0.0 });
    let mid = (y0 + y1) / 2.0;
    let (y0, y1) = (y0.min(mid - span / 2.0), y1.max(mid + span / 2.0));
    let pad = (y1 - y0) * 0.05;
    Some(((x0, x1), (y0 - pad, y1 + pad)))
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &LineChart) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let Some(((x0, x1), (y0, y1))) = bounds(c) else {
        root.draw(&Text::new(
            format!("{}: no data", c.title),
            (20, 20),
            ("sans-serif", 16),
        ))
        .map_err(e)?;
        return root.present().map_err(e);
    };
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&c.title, ("sans-serif", 20))
        .margin(12)
        .margin_right(40)
        .x_label_area_size(45)
        .y_label_area_size(70);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(&c.x_label)
                .y_desc(&c.y_label)
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 15))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(e)?;
            for s in &c.spans {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(s.from.max(x0), y0), (s.to.min(x1), y1)],
                        s.color.mix(0.15).filled(),
                    )))
                    .map_err(e)?;
                let mid = if c.log_x {
                    (s.from.max(x0) * s.to.min(x1)).sqrt()
                } else {
                    (s.from.max(x0) + s.to.min(x1)) / 2.0
                };
                chart
                    .draw_series(std::iter::once(Text::new(
                        s.label.clone(),
                        (mid, y1 - (y1 - y0) * 0.02),
                        ("sans-serif", 14).into_font().color(&BLACK),
                    )))
                    .map_err(e)?;
            }
            // Boundaries between stages (neighbours of one type share a colour).
            for sp in c.spans.iter().skip(1) {
                chart
                    .draw_series(LineSeries::new(
                        vec![(sp.from, y0), (sp.from, y1)],
                        RGBColor(120, 120, 120).stroke_width(1),
                    ))
                    .map_err(e)?;
            }
            for &m in &c.markers {
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(m, y0), (m, y1)],
                        6,
                        4,
                        BLACK.mix(0.6).stroke_width(1),
                    ))
                    .map_err(e)?;
            }
            for s in &c.series {
                if !s.band.is_empty() {
                    let mut poly: Vec<(f64, f64)> = s.band.iter().map(|b| (b.0, b.2)).collect();
                    poly.extend(s.band.iter().rev().map(|b| (b.0, b.1)));
                    chart
                        .draw_series(std::iter::once(Polygon::new(
                            poly,
                            s.color.mix(0.2).filled(),
                        )))
                        .map_err(e)?;
                }
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                    .collect();
                let color = s.color;
                let dashed = s.dashed;
                let drawn = if dashed {
                    chart.draw_series(DashedLineSeries::new(pts, 8, 5, color.stroke_width(2)))
                } else {
                    chart.draw_series(LineSeries::new(pts, color.stroke_width(2)))
                }
                .map_err(e)?;
                drawn.label(s.label.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
                });
            }
            chart
                .draw_series(
                    c.dots
                        .iter()
                        .map(|p| Circle::new(*p, 6, BLACK.stroke_width(2))),
                )
                .map_err(e)?;
            if c.series.iter().any(|s| !s.label.is_empty()) {
                chart
                    .configure_series_labels()
                    .label_font(("sans-serif", 13))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.5))
                    .position(c.legend.position())
                    .draw()
                    .map_err(e)?;
            }
        }};
    }
    if c.log_x {
        body!(
            builder
                .build_cartesian_2d((x0..x1 * 1.05).log_scale(), y0..y1)
                .map_err(e)?
        );
    } else {
        body!(builder.build_cartesian_2d(x0..x1, y0..y1).map_err(e)?);
    }
    root.present().map_err(e)
}

/// Something drawn once to SVG (for the page) and once to PNG: a line chart or a heatmap.
pub trait Figure {
    /// Names the figure in errors.
    fn title(&self) -> &str;
    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static;

    /// The figure as an SVG document.
    fn svg(&self, size: (u32, u32)) -> Result<String, ChartError> {
        // Text is measured with the embedded font in SVG too.
        register_font();
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
            self.draw_on(&root).map_err(|msg| self.error(msg))?;
        }
        Ok(out)
    }

    /// The figure as a PNG file.
    fn png(&self, path: &std::path::Path, size: (u32, u32)) -> Result<(), ChartError> {
        register_font();
        let root = BitMapBackend::new(path, size).into_drawing_area();
        self.draw_on(&root).map_err(|msg| self.error(msg))
    }

    /// The figure as the bytes of a PNG file (8-bit RGB).
    fn png_bytes(&self, size: (u32, u32)) -> Result<Vec<u8>, ChartError> {
        register_font();
        let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
            self.draw_on(&root).map_err(|msg| self.error(msg))?;
        }
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, size.0, size.1);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| self.error(format!("PNG encoding: {e}")))?;
        w.write_image_data(&rgb)
            .map_err(|e| self.error(format!("PNG encoding: {e}")))?;
        w.finish()
            .map_err(|e| self.error(format!("PNG encoding: {e}")))?;
        Ok(out)
    }

    fn error(&self, msg: String) -> ChartError {
        ChartError {
            chart: self.title().to_string(),
            msg,
        }
    }
}

impl Figure for LineChart {
    fn title(&self) -> &str {
        &self.title
    }

    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        draw(root, self)
    }
}
