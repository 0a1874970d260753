//! The plotting kit every figure of muxmed is drawn with (report, compare, explain, search):
//! the font, rendering one drawing to PNG and SVG, the title canvas, framed legends, the unit
//! square of ROC and reliability panels with its chance diagonal, the log multiply-adds axis
//! with its number format, and marker sizes by parameter count. Text uses DejaVu Sans embedded
//! in the binary (ab_glyph), so no system font is needed.

use std::path::PathBuf;
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One colour per series (a compared model, a subgroup), in order: colour-blind-safe
/// Okabe–Ito hues.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Series `i`'s colour of [`PALETTE`] (cycling).
pub(crate) fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

static FONT: Once = Once::new();

pub(crate) fn ensure_font() {
    FONT.call_once(|| {
        // The bytes are a valid TrueType font shipped inside the dejavu crate.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("drawing {name}: {message}")]
    Draw { name: String, message: String },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A figure written to disk.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub title: String,
    pub png: PathBuf,
    pub svg: PathBuf,
    pub size: (u32, u32),
}

pub(crate) type DrawResult = Result<(), String>;

/// Renders `draw` once into a PNG buffer and once into an SVG string.
macro_rules! render {
    ($dir:expr, $name:expr, $title:expr, $size:expr, $draw:expr) => {{
        $crate::plot::ensure_font();
        let (w, h): (u32, u32) = $size;
        let name: &str = $name;
        let derr = |message: String| $crate::plot::PlotError::Draw {
            name: name.to_string(),
            message,
        };
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        {
            let root =
                plotters::prelude::BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            $draw(&root).map_err(derr)?;
            root.present().map_err(|e| derr(e.to_string()))?;
        }
        let mut svg = String::new();
        {
            let root =
                plotters::prelude::SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            $draw(&root).map_err(derr)?;
            root.present().map_err(|e| derr(e.to_string()))?;
        }
        let png_path = $dir.join(format!("{name}.png"));
        let svg_path = $dir.join(format!("{name}.svg"));
        let mut png = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut png),
            &rgb,
            w,
            h,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| derr(e.to_string()))?;
        let write = |p: &std::path::Path, b: &[u8]| {
            $crate::io::write_atomic(p, b).map_err(|source| $crate::plot::PlotError::Write {
                path: p.to_path_buf(),
                source,
            })
        };
        write(&png_path, &png)?;
        write(&svg_path, svg.as_bytes())?;
        Ok::<$crate::plot::Figure, $crate::plot::PlotError>($crate::plot::Figure {
            name: name.to_string(),
            title: $title.to_string(),
            png: png_path,
            svg: svg_path,
            size: (w, h),
        })
    }};
}
pub(crate) use render;

/// Fills `root` white and puts `title` in bold `size` pt on top; returns the area below it.
pub(crate) fn canvas<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    size: u32,
) -> Result<DrawingArea<DB, Shift>, String> {
    root.fill(&WHITE).map_err(e2s)?;
    root.titled(
        title,
        ("sans-serif", size).into_font().style(FontStyle::Bold),
    )
    .map_err(e2s)
}

pub(crate) fn e2s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Draws the series labels of `chart` in a framed, translucent box.
pub(crate) fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    font_size: u32,
    opacity: f64,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", font_size))
        .background_style(WHITE.mix(opacity))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(e2s)
}

/// A unit-square chart (both axes 0..1) with a caption and axis titles, as every per-label
/// panel draws.
pub(crate) fn unit_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    big: bool,
) -> Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>, String> {
    let (title_size, label_size) = if big { (22, 16) } else { (15, 11) };
    let mut chart = ChartBuilder::on(area)
        .caption(
            caption,
            ("sans-serif", title_size)
                .into_font()
                .style(FontStyle::Bold),
        )
        .margin(6)
        .x_label_area_size(if big { 40 } else { 28 })
        .y_label_area_size(if big { 50 } else { 34 })
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(e2s)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(6)
        .y_labels(6)
        .label_style(("sans-serif", label_size))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(e2s)?;
    Ok(chart)
}

/// The chance line of a ROC or reliability panel, from (0, 0) to (1, 1).
pub(crate) fn diagonal<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> DrawResult {
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.3),
        ))
        .map_err(e2s)?;
    Ok(())
}

/// A count in k, M or G with a unit: 2091210 → "2.09M", 215500000 → "0.22G".
pub fn human(v: f64, unit: &str) -> String {
    if v >= 1e8 {
        format!("{:.2}G{unit}", v / 1e9)
    } else if v >= 1e5 {
        format!("{:.2}M{unit}", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k{unit}", v / 1e3)
    } else {
        format!("{v:.0}{unit}")
    }
}

/// A chart of a score against multiply-adds per image on a log axis (`x` and `y` the
/// ranges), meshed and labelled, as compare's cost chart and the search front draw it.
pub(crate) fn madds_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    x: (f64, f64),
    y: (f64, f64),
    y_desc: &str,
) -> Result<MaddsChart<'a, DB>, String> {
    let mut chart = ChartBuilder::on(area)
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((x.0..x.1).log_scale(), y.0..y.1)
        .map_err(e2s)?;
    chart
        .configure_mesh()
        .x_desc("multiply-adds per image (log scale)")
        .y_desc(y_desc)
        .x_label_formatter(&|v| human(*v, ""))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e2s)?;
    Ok(chart)
}

/// What [`madds_chart`] returns.
pub(crate) type MaddsChart<'a, DB> =
    ChartContext<'a, DB, Cartesian2d<LogCoord<f64>, RangedCoordf64>>;

/// A marker radius in pixels whose area grows with `params`: `base` for none, `base + span`
/// for `max_params`.
pub(crate) fn marker_radius(params: f64, max_params: f64, base: f64, span: f64) -> i32 {
    (base + span * (params / max_params.max(1.0)).sqrt()) as i32
}
