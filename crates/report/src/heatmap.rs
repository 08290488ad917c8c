//! A heatmap of a small labelled matrix (e.g. attention heads x observables), on a diverging
//! scale symmetric around zero (blue negative, white zero, red positive), each cell printed.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::chart::Figure;

#[derive(Clone, Debug)]
pub struct Heatmap {
    pub title: String,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    /// Row-major `rows x cols`; NaN cells are grey.
    pub values: Vec<f64>,
}

impl Heatmap {
    /// The largest magnitude: the scale's end on both sides.
    pub fn scale(&self) -> f64 {
        self.values
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f64, |m, v| m.max(v.abs()))
    }

    /// The colour of `v` on the scale `[-s, s]`.
    pub fn color(v: f64, s: f64) -> RGBColor {
        if !v.is_finite() {
            return RGBColor(200, 200, 200);
        }
        let t = if s > 0.0 {
            (v / s).clamp(-1.0, 1.0)
        } else {
            0.0
        };
        let mix = |a: u8, b: u8, t: f64| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
        let (end, t) = if t >= 0.0 {
            (RGBColor(178, 24, 43), t)
        } else {
            (RGBColor(33, 102, 172), -t)
        };
        RGBColor(mix(255, end.0, t), mix(255, end.1, t), mix(255, end.2, t))
    }
}

impl Figure for Heatmap {
    fn title(&self) -> &str {
        &self.title
    }

    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
        root.fill(&WHITE).map_err(e)?;
        let (nr, nc) = (self.rows.len(), self.cols.len());
        if nr == 0 || nc == 0 || self.values.len() != nr * nc {
            root.draw(&Text::new(
                format!("{}: no data", self.title),
                (20, 20),
                ("sans-serif", 16),
            ))
            .map_err(e)?;
            return root.present().map_err(e);
        }
        let s = self.scale();
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{} (scale +-{s:.3e})", self.title),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..nc as f64, 0.0..nr as f64)
            .map_err(e)?;
        // Labels at the cells' centres, placed in pixels beside the plotting area.
        for (c, name) in self.cols.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(c as f64 + 0.5, 0.0));
            root.draw(&Text::new(
                name.clone(),
                (x - 4 * name.len() as i32, y + 8),
                ("sans-serif", 13),
            ))
            .map_err(e)?;
        }
        for (r, name) in self.rows.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(0.0, (nr - 1 - r) as f64 + 0.5));
            root.draw(&Text::new(
                name.clone(),
                (x - 8 - 8 * name.len() as i32, y - 6),
                ("sans-serif", 13),
            ))
            .map_err(e)?;
        }
        for r in 0..nr {
            for c in 0..nc {
                let v = self.values[r * nc + c];
                // Row 0 at the top.
                let y = (nr - 1 - r) as f64;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(c as f64, y), (c as f64 + 1.0, y + 1.0)],
                        Self::color(v, s).filled(),
                    )))
                    .map_err(e)?;
                let text = if v.is_finite() {
                    format!("{v:.2e}")
                } else {
                    "-".into()
                };
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (c as f64 + 0.25, y + 0.6),
                        ("sans-serif", 12).into_font().color(&BLACK),
                    )))
                    .map_err(e)?;
            }
        }
        root.present().map_err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_symmetric_and_the_figure_draws() {
        assert_eq!(Heatmap::color(0.0, 1.0), RGBColor(255, 255, 255));
        assert_eq!(Heatmap::color(1.0, 1.0), RGBColor(178, 24, 43));
        assert_eq!(Heatmap::color(-2.0, 1.0), RGBColor(33, 102, 172));
        let h = Heatmap {
            title: "chi".into(),
            rows: vec!["L0H0".into(), "L0H1".into()],
            cols: vec!["true".into(), "inputs:3".into(), "tasks:3".into()],
            values: vec![0.1, -0.2, f64::NAN, 0.0, 0.05, 0.3],
        };
        assert_eq!(h.scale(), 0.3);
        let svg = h.svg((600, 300)).unwrap();
        assert!(svg.contains("L0H1") && svg.contains("inputs:3") && svg.contains("-2.00e-1"));
        let png = h.png_bytes((600, 300)).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
