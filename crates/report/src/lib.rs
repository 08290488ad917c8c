//! Figures and the HTML report of a run: charts drawn with plotters to SVG (inlined in one
//! self-contained page, no network) and PNG (with an embedded font).

pub mod chart;
pub mod heatmap;
pub mod html;

pub use chart::{Corner, Figure, LineChart, Series, Span, palette};
pub use heatmap::Heatmap;
pub use plotters::style::RGBColor;
