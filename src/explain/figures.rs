//! Pictures: a heatmap over the original X-ray (viridis, a colour bar, the label and its
//! probability), the benchmark's accuracy per threshold with the baselines, and its gallery
//! of best and worst cases with the boxes drawn.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::data::image::Gray;
use crate::metrics::localization::Rect;
use crate::plot::{e2s, ensure_font, render, Figure};
use crate::run::{Localization, MapSource};

/// Ground truth in green, detections in orange.
pub const TRUTH: RGBColor = RGBColor(40, 220, 80);
pub const DETECTED: RGBColor = RGBColor(255, 150, 30);

/// matplotlib's viridis (perceptually uniform, readable in grey and by colour-blind
/// readers) at nine evenly spaced points, interpolated linearly.
const VIRIDIS: [[f32; 3]; 9] = [
    [68.0, 1.0, 84.0],
    [71.0, 44.0, 122.0],
    [59.0, 81.0, 139.0],
    [44.0, 113.0, 142.0],
    [33.0, 144.0, 141.0],
    [39.0, 173.0, 129.0],
    [92.0, 200.0, 99.0],
    [170.0, 220.0, 50.0],
    [253.0, 231.0, 37.0],
];

fn viridis(v: f32) -> RGBColor {
    let t = v.clamp(0.0, 1.0) * 8.0;
    let i = (t.floor() as usize).min(7);
    let f = t - i as f32;
    let c = |k: usize| (VIRIDIS[i][k] * (1.0 - f) + VIRIDIS[i + 1][k] * f).round() as u8;
    RGBColor(c(0), c(1), c(2))
}

/// The original's pixels as RGB with the map blended in: viridis at an opacity rising with
/// the map (0 where the map is 0, 0.6 at 1), so the anatomy stays readable. Pixels the
/// network never saw (NaN) are dimmed and hatched.
pub fn blend(gray: &Gray, map: &[f32]) -> Vec<u8> {
    let w = gray.width as usize;
    let mut out = Vec::with_capacity(gray.data.len() * 3);
    for (i, (&g, &m)) in gray.data.iter().zip(map).enumerate() {
        let g = g.clamp(0.0, 1.0) * 255.0;
        if m.is_nan() {
            let (x, y) = (i % w, i / w);
            let stripe = (x + y) % 16 < 3;
            let v = if stripe { 200.0 } else { g * 0.35 };
            out.extend([v as u8; 3]);
        } else {
            let c = viridis(m);
            let a = 0.6 * m.clamp(0.0, 1.0);
            for ch in [c.0, c.1, c.2] {
                out.push((g * (1.0 - a) + ch as f32 * a).round() as u8);
            }
        }
    }
    out
}

fn to_png(path: &Path, rgb: &[u8], w: u32, h: u32) -> Result<()> {
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        rgb,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .with_context(|| format!("encoding {}", path.display()))?;
    crate::io::write_atomic(path, &png).with_context(|| format!("writing {}", path.display()))
}

/// Copies an RGB tile into a larger RGB canvas at (left, top).
fn blit(canvas: &mut [u8], cw: usize, tile: &[u8], tw: usize, left: usize, top: usize) {
    for (r, row) in tile.chunks(tw * 3).enumerate() {
        let start = ((top + r) * cw + left) * 3;
        canvas[start..start + row.len()].copy_from_slice(row);
    }
}

fn colour_bar(
    area: &DrawingArea<BitMapBackend, Shift>,
    x: i32,
    y0: i32,
    y1: i32,
    font: u32,
) -> Result<(), String> {
    let bw = (font as i32).max(10);
    for y in y0..y1 {
        let v = 1.0 - (y - y0) as f32 / (y1 - y0) as f32;
        area.draw(&Rectangle::new(
            [(x, y), (x + bw, y + 1)],
            viridis(v).filled(),
        ))
        .map_err(e2s)?;
    }
    area.draw(&Rectangle::new(
        [(x, y0), (x + bw, y1)],
        BLACK.stroke_width(1),
    ))
    .map_err(e2s)?;
    let style = ("sans-serif", font).into_font().color(&BLACK);
    for (v, label) in [(1.0, "1"), (0.5, "0.5"), (0.0, "0")] {
        let y = y1 - ((y1 - y0) as f64 * v) as i32;
        area.draw(&Text::new(
            label,
            (x + bw + 4, y - font as i32 / 2),
            style.clone(),
        ))
        .map_err(e2s)?;
    }
    Ok(())
}

/// Nearest-neighbour enlargement of an RGB image by an integer factor `k`.
fn enlarge(rgb: &[u8], w: usize, k: usize) -> Vec<u8> {
    if k == 1 {
        return rgb.to_vec();
    }
    let mut out = Vec::with_capacity(rgb.len() * k * k);
    for row in rgb.chunks(w * 3) {
        let wide: Vec<u8> = row.chunks(3).flat_map(|p| p.repeat(k)).collect();
        for _ in 0..k {
            out.extend_from_slice(&wide);
        }
    }
    out
}

/// The overlay picture of one image and label: the original at full resolution with the map,
/// a title band (`title` in bold, `subtitle` below) and a legend panel. Originals under 512
/// pixels are shown enlarged by a whole factor, each original pixel a square block. `boxes`
/// are drawn on top (original coordinates).
pub fn overlay(
    path: &Path,
    gray: &Gray,
    map: &[f32],
    title: &str,
    subtitle: &str,
    boxes: &[(Rect, RGBColor)],
) -> Result<()> {
    ensure_font();
    let (ow, oh) = (gray.width as usize, gray.height as usize);
    let k = (512 / ow.max(oh)).max(1);
    let (w, h) = (ow * k, oh * k);
    let font = (h / 40).clamp(14, 40) as u32;
    let small = (font * 3 / 4).max(11);
    let (band, panel) = ((font + small) as usize + 20, (w / 5).max(150));
    let (cw, ch) = (w + panel, h + band);
    let subtitle = if k > 1 {
        format!("{subtitle}, shown at {k}x")
    } else {
        subtitle.to_string()
    };
    let mut canvas = vec![255u8; cw * ch * 3];
    blit(
        &mut canvas,
        cw,
        &enlarge(&blend(gray, map), ow, k),
        w,
        0,
        band,
    );
    {
        let root =
            BitMapBackend::with_buffer(&mut canvas, (cw as u32, ch as u32)).into_drawing_area();
        let draw = || -> Result<(), String> {
            root.draw(&Text::new(
                title.to_string(),
                (8, 6),
                ("sans-serif", font).into_font().style(FontStyle::Bold),
            ))
            .map_err(e2s)?;
            root.draw(&Text::new(
                subtitle.clone(),
                (8, 10 + font as i32),
                ("sans-serif", small).into_font(),
            ))
            .map_err(e2s)?;
            let kf = k as f64;
            for (r, c) in boxes {
                let p = |x: f64, y: f64| {
                    (
                        (x * kf).round() as i32,
                        (y * kf).round() as i32 + band as i32,
                    )
                };
                root.draw(&Rectangle::new(
                    [p(r.x0, r.y0), p(r.x1, r.y1)],
                    c.stroke_width((h / 300).max(2) as u32),
                ))
                .map_err(e2s)?;
            }
            let x = w as i32 + 16;
            root.draw(&Text::new(
                "Grad-CAM",
                (x, band as i32 + 4),
                ("sans-serif", small).into_font(),
            ))
            .map_err(e2s)?;
            let (y0, y1) = (
                band as i32 + 8 + 2 * small as i32,
                band as i32 + (h as i32 * 3) / 5,
            );
            colour_bar(&root, x, y0, y1, small)?;
            if map.iter().any(|v| v.is_nan()) {
                let y = y1 + 2 * small as i32;
                root.draw(&Rectangle::new(
                    [(x, y), (x + small as i32, y + small as i32)],
                    RGBColor(90, 90, 90).filled(),
                ))
                .map_err(e2s)?;
                for (i, line) in ["not seen", "(cropped", "away)"].iter().enumerate() {
                    root.draw(&Text::new(
                        *line,
                        (x + small as i32 + 6, y + i as i32 * (small as i32 + 2)),
                        ("sans-serif", small).into_font(),
                    ))
                    .map_err(e2s)?;
                }
            }
            root.present().map_err(e2s)
        };
        draw().map_err(|m| anyhow!("drawing {}: {m}", path.display()))?;
    }
    to_png(path, &canvas, cw as u32, ch as u32)
}

/// Accuracy at each T(IoBB) per finding (and over all boxes), the model against the
/// centre-prior and random baselines; pointing accuracies in each panel's caption.
pub fn accuracy_chart(dir: &Path, l: &Localization) -> Result<Figure> {
    let overall = (
        "all findings".to_string(),
        MapSource::ALL.map(|s| l.source(s).map(|a| a.overall.clone())),
    );
    let mut panels = vec![overall];
    if let Some(model) = l.source(MapSource::Model) {
        for f in &model.per_finding {
            let of = |s: MapSource| {
                l.source(s)
                    .and_then(|a| a.per_finding.iter().find(|x| x.finding == f.finding))
                    .map(|x| x.accuracy.clone())
            };
            panels.push((f.finding.clone(), MapSource::ALL.map(of)));
        }
    }
    let cols = 3usize;
    let rows = panels.len().div_ceil(cols);
    let size = (1200u32, 60 + 300 * rows as u32);
    let colours = [
        RGBColor(31, 119, 180),
        RGBColor(150, 150, 150),
        RGBColor(214, 39, 40),
    ];
    let title = match &l.on {
        None => format!("Localization on the {} split: accuracy at T(IoBB)", l.split),
        Some(p) => format!(
            "Localization on `{p}`'s {} split: accuracy at T(IoBB)",
            l.split
        ),
    };
    let fig = render!(
        dir,
        crate::run::LocalizationFiles::CHART,
        title.clone(),
        size,
        |root: &DrawingArea<_, Shift>| -> Result<(), String> {
            let area = crate::plot::canvas(root, &title, 22)?;
            for (cell, (name, accs)) in area.split_evenly((rows, cols)).iter().zip(&panels) {
                let n = accs[0].as_ref().map_or(0, |a| a.boxes);
                let point = MapSource::ALL
                    .iter()
                    .zip(accs)
                    .filter_map(|(s, a)| {
                        a.as_ref()
                            .map(|a| format!("{} {:.2}", s.as_str().replace('_', " "), a.pointing))
                    })
                    .collect::<Vec<_>>()
                    .join(" · ");
                let mut chart = ChartBuilder::on(cell)
                    .caption(format!("{name} ({n} boxes)"), ("sans-serif", 15))
                    .margin(8)
                    .x_label_area_size(42)
                    .y_label_area_size(40)
                    .build_cartesian_2d(0.0..1.0f64, 0.0..1.0f64)
                    .map_err(e2s)?;
                chart
                    .configure_mesh()
                    .x_desc(format!("T(IoBB)   pointing: {point}"))
                    .y_desc("accuracy")
                    .label_style(("sans-serif", 12))
                    .axis_desc_style(("sans-serif", 12))
                    .draw()
                    .map_err(e2s)?;
                for ((s, a), c) in MapSource::ALL.iter().zip(accs).zip(colours) {
                    let Some(a) = a else { continue };
                    let pts: Vec<(f64, f64)> = l
                        .iobb_thresholds
                        .iter()
                        .copied()
                        .zip(a.iobb.iter().copied())
                        .collect();
                    chart
                        .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                        .map_err(e2s)?
                        .label(s.as_str().replace('_', " "))
                        .legend(move |(x, y)| {
                            PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2))
                        });
                    chart
                        .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
                        .map_err(e2s)?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 12))
                    .draw()
                    .map_err(e2s)?;
            }
            Ok(())
        }
    )?;
    Ok(fig)
}

/// One gallery case: the original, the map, the truth and the model's detections.
pub struct Case<'a> {
    pub gray: &'a Gray,
    pub map: &'a [f32],
    pub truth: Rect,
    pub detections: &'a [Rect],
    pub caption: String,
}

/// Rows of cases (e.g. best and worst), each tile the image shrunk to `tile` px wide with
/// the map, the truth box (green) and detections (orange).
pub fn gallery(path: &Path, title: &str, rows: &[(String, Vec<Case>)]) -> Result<()> {
    ensure_font();
    let tile = 300usize;
    let cols = rows.iter().map(|(_, c)| c.len()).max().unwrap_or(1).max(1);
    let (head, caption, gap) = (40usize, 36usize, 10usize);
    let row_h = 24 + tile + caption;
    let (cw, ch) = (cols * (tile + gap) + gap, head + rows.len() * row_h);
    let mut canvas = vec![255u8; cw * ch * 3];
    let mut scales = Vec::new();
    for (r, (_, cases)) in rows.iter().enumerate() {
        for (c, case) in cases.iter().enumerate() {
            let (w, h) = (case.gray.width, case.gray.height);
            let s = tile as f64 / w.max(h) as f64;
            let (tw, th) = (
                ((w as f64 * s).round() as u32).max(1),
                ((h as f64 * s).round() as u32).max(1),
            );
            let full = image::RgbImage::from_raw(w, h, blend(case.gray, case.map))
                .context("gallery tile")?;
            let small =
                image::imageops::resize(&full, tw, th, image::imageops::FilterType::Triangle);
            let (left, top) = (gap + c * (tile + gap), head + r * row_h + 24);
            blit(&mut canvas, cw, small.as_raw(), tw as usize, left, top);
            scales.push((r, c, s, left, top));
        }
    }
    {
        let root =
            BitMapBackend::with_buffer(&mut canvas, (cw as u32, ch as u32)).into_drawing_area();
        let draw = || -> Result<(), String> {
            root.draw(&Text::new(
                title.to_string(),
                (gap as i32, 10),
                ("sans-serif", 20).into_font().style(FontStyle::Bold),
            ))
            .map_err(e2s)?;
            for (r, (name, _)) in rows.iter().enumerate() {
                root.draw(&Text::new(
                    name.clone(),
                    (gap as i32, (head + r * row_h) as i32 + 2),
                    ("sans-serif", 16).into_font().style(FontStyle::Bold),
                ))
                .map_err(e2s)?;
            }
            for &(r, c, s, left, top) in &scales {
                let case = &rows[r].1[c];
                let p = |x: f64, y: f64| {
                    (
                        (x * s).round() as i32 + left as i32,
                        (y * s).round() as i32 + top as i32,
                    )
                };
                for d in case.detections {
                    root.draw(&Rectangle::new(
                        [p(d.x0, d.y0), p(d.x1, d.y1)],
                        DETECTED.stroke_width(2),
                    ))
                    .map_err(e2s)?;
                }
                let t = &case.truth;
                root.draw(&Rectangle::new(
                    [p(t.x0, t.y0), p(t.x1, t.y1)],
                    TRUTH.stroke_width(2),
                ))
                .map_err(e2s)?;
                for (i, line) in case.caption.lines().enumerate() {
                    root.draw(&Text::new(
                        line.to_string(),
                        (left as i32, (top + tile + 4 + i * 15) as i32),
                        ("sans-serif", 13).into_font(),
                    ))
                    .map_err(e2s)?;
                }
            }
            root.present().map_err(e2s)
        };
        draw().map_err(|m| anyhow!("drawing {}: {m}", path.display()))?;
    }
    to_png(path, &canvas, cw as u32, ch as u32)
}
