//! The ChestX-ray8 box benchmark's arithmetic (Wang et al., CVPR 2017, section 4.2): a map is
//! thresholded, its 8-connected components' bounding boxes are the detections, and a
//! ground-truth box counts as found at T(IoBB) or T(IoU) when any detection passes; the
//! pointing game asks whether the map's maximum falls inside the box.

/// A rectangle in pixel-edge coordinates (pixel i covers [i, i + 1)).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rect {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl Rect {
    /// From NIH's `x, y, w, h` (top-left corner and size).
    pub fn from_xywh(x: f64, y: f64, w: f64, h: f64) -> Self {
        Rect {
            x0: x,
            y0: y,
            x1: x + w,
            y1: y + h,
        }
    }
    pub fn area(&self) -> f64 {
        (self.x1 - self.x0).max(0.0) * (self.y1 - self.y0).max(0.0)
    }
    pub fn intersection(&self, o: &Rect) -> f64 {
        let w = self.x1.min(o.x1) - self.x0.max(o.x0);
        let h = self.y1.min(o.y1) - self.y0.max(o.y0);
        w.max(0.0) * h.max(0.0)
    }
    /// Whether the centre of pixel (x, y) lies inside.
    pub fn contains_pixel(&self, x: usize, y: usize) -> bool {
        let (cx, cy) = (x as f64 + 0.5, y as f64 + 0.5);
        cx >= self.x0 && cx < self.x1 && cy >= self.y0 && cy < self.y1
    }
}

/// Intersection over the detected box's area (Wang et al.'s IoBB).
pub fn iobb(truth: &Rect, detected: &Rect) -> f64 {
    let a = detected.area();
    if a > 0.0 {
        truth.intersection(detected) / a
    } else {
        0.0
    }
}

/// Intersection over union.
pub fn iou(truth: &Rect, detected: &Rect) -> f64 {
    let i = truth.intersection(detected);
    let u = truth.area() + detected.area() - i;
    if u > 0.0 {
        i / u
    } else {
        0.0
    }
}

/// Bounding boxes of the 8-connected components of `mask` (width `w`, row-major), in the
/// order their first pixel appears in raster order.
pub fn components(mask: &[bool], w: usize) -> Vec<Rect> {
    let h = mask.len().checked_div(w).unwrap_or(0);
    let mut seen = vec![false; mask.len()];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let j = ny * w + nx;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(Rect {
            x0: x0 as f64,
            y0: y0 as f64,
            x1: (x1 + 1) as f64,
            y1: (y1 + 1) as f64,
        });
    }
    out
}

/// The first pixel holding the map's largest value (NaN, meaning "not seen", is skipped).
pub fn argmax(map: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in map.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Thresholds of the benchmark (Wang et al.'s tables).
pub const IOBB_THRESHOLDS: [f64; 5] = [0.1, 0.25, 0.5, 0.75, 0.9];
pub const IOU_THRESHOLDS: [f64; 7] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7];

/// How one map did on one ground-truth box.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BoxOutcome {
    /// The best IoBB and IoU over the detections (0 without detections).
    pub iobb: f64,
    pub iou: f64,
    pub pointing: bool,
    pub detections: Vec<Rect>,
}

/// What one thresholded map offers every box on its image: the detections and the peak.
#[derive(Debug, Clone, PartialEq)]
pub struct Detections {
    pub boxes: Vec<Rect>,
    /// (x, y) of the map's first maximum; `None` when nothing was seen.
    pub peak: Option<(usize, usize)>,
}

/// Thresholds `map` (width `w`; NaN = not seen, never detected) at `threshold` into
/// 8-connected detections, and finds its peak.
pub fn detect(map: &[f32], w: usize, threshold: f32) -> Detections {
    let mask: Vec<bool> = map.iter().map(|&v| v >= threshold).collect();
    Detections {
        boxes: components(&mask, w),
        peak: argmax(map).map(|i| (i % w, i / w)),
    }
}

/// Scores one map's detections against `truth`.
pub fn score(d: &Detections, truth: &Rect) -> BoxOutcome {
    let best =
        |f: fn(&Rect, &Rect) -> f64| d.boxes.iter().map(|b| f(truth, b)).fold(0.0f64, f64::max);
    BoxOutcome {
        iobb: best(iobb),
        iou: best(iou),
        pointing: d.peak.is_some_and(|(x, y)| truth.contains_pixel(x, y)),
        detections: d.boxes.clone(),
    }
}

/// [`detect`] then [`score`]: one map against one box.
pub fn score_box(map: &[f32], w: usize, truth: &Rect, threshold: f32) -> BoxOutcome {
    score(&detect(map, w, threshold), truth)
}

/// Accuracies over a set of boxes: a box is found at T when its best value exceeds T.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Accuracy {
    pub boxes: usize,
    /// One per [`IOBB_THRESHOLDS`].
    pub iobb: Vec<f64>,
    /// One per [`IOU_THRESHOLDS`].
    pub iou: Vec<f64>,
    pub pointing: f64,
}

impl Accuracy {
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a BoxOutcome>) -> Accuracy {
        let o: Vec<&BoxOutcome> = outcomes.into_iter().collect();
        let n = o.len();
        let frac = |f: &dyn Fn(&BoxOutcome) -> bool| {
            if n == 0 {
                f64::NAN
            } else {
                o.iter().filter(|b| f(b)).count() as f64 / n as f64
            }
        };
        Accuracy {
            boxes: n,
            iobb: IOBB_THRESHOLDS
                .iter()
                .map(|&t| frac(&|b| b.iobb > t))
                .collect(),
            iou: IOU_THRESHOLDS
                .iter()
                .map(|&t| frac(&|b| b.iou > t))
                .collect(),
            pointing: frac(&|b| b.pointing),
        }
    }

    /// Accuracy at IoBB > 0.25, the demo's headline.
    pub fn iobb_025(&self) -> f64 {
        self.iobb[1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 10x8 map with two blobs: a 3x2 one at x 1..4, y 1..3 and an L-shaped one touching
    /// only diagonally between its parts, at the right edge.
    fn two_blobs() -> (Vec<f32>, usize) {
        let w = 10;
        let mut m = vec![0.1f32; w * 8];
        for (x, y) in [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 2)] {
            m[y * w + x] = 0.8;
        }
        for (x, y) in [(9, 4), (8, 5), (9, 6), (9, 7)] {
            m[y * w + x] = 0.6;
        }
        m[2 * w + 2] = 1.0;
        (m, w)
    }

    #[test]
    fn two_components_with_diagonal_links_have_their_bounding_boxes() {
        let (m, w) = two_blobs();
        let mask: Vec<bool> = m.iter().map(|&v| v >= 0.5).collect();
        let c = components(&mask, w);
        assert_eq!(
            c,
            [
                Rect {
                    x0: 1.0,
                    y0: 1.0,
                    x1: 4.0,
                    y1: 3.0
                },
                // (9,4), (8,5), (9,6) touch only at corners: one component under 8-connectivity.
                Rect {
                    x0: 8.0,
                    y0: 4.0,
                    x1: 10.0,
                    y1: 8.0
                },
            ]
        );
        // 4-connectivity would have split it: the check that the diagonals are used.
        assert_eq!(components(&[true, false, false, true], 2).len(), 1);
    }

    #[test]
    fn iobb_iou_and_pointing_on_known_boxes() {
        let (m, w) = two_blobs();
        // A truth box holding the first blob and half of the map's width around it.
        let truth = Rect::from_xywh(0.0, 0.0, 5.0, 4.0);
        let o = score_box(&m, w, &truth, 0.5);
        assert_eq!(o.detections.len(), 2);
        // Blob 1 (3x2 = 6 px) lies inside the truth (20 px): IoBB 1, IoU 6/20.
        assert_eq!(o.iobb, 1.0);
        assert!((o.iou - 0.3).abs() < 1e-15);
        assert!(o.pointing);
        // A box at the image edge over the second blob's lower half (x 8..10, y 6..8): blob
        // 2's box is 2x4 = 8 px, intersection 4: IoBB 0.5, IoU 4 / (4 + 8 - 4) = 0.5.
        let edge = Rect::from_xywh(8.0, 6.0, 2.0, 2.0);
        let o = score_box(&m, w, &edge, 0.5);
        assert_eq!(o.iobb, 0.5);
        assert_eq!(o.iou, 0.5);
        assert!(!o.pointing);
        // Thresholded above both blobs' values but the peak: one 1-pixel detection.
        let o = score_box(&m, w, &truth, 0.9);
        assert_eq!(
            o.detections,
            [Rect {
                x0: 2.0,
                y0: 2.0,
                x1: 3.0,
                y1: 3.0
            }]
        );
        let a = Accuracy::of([
            &score_box(&m, w, &truth, 0.5),
            &score_box(&m, w, &edge, 0.5),
        ]);
        assert_eq!(a.boxes, 2);
        assert_eq!(a.iobb, [1.0, 1.0, 0.5, 0.5, 0.5]);
        // Box 1's IoU is exactly 0.3, which does not exceed T = 0.3.
        assert_eq!(a.iou, [1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0]);
        assert_eq!(a.pointing, 0.5);
    }

    #[test]
    fn not_seen_pixels_are_never_detected_or_pointed_at() {
        let w = 4;
        let mut m = vec![f32::NAN; 16];
        m[5] = 0.2;
        m[10] = 0.1;
        let truth = Rect::from_xywh(1.0, 1.0, 1.0, 1.0);
        let o = score_box(&m, w, &truth, 0.15);
        assert_eq!(
            o.detections,
            [Rect {
                x0: 1.0,
                y0: 1.0,
                x1: 2.0,
                y1: 2.0
            }]
        );
        assert!(o.pointing);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), None);
        let empty = score_box(&[0.0; 4], 2, &truth, 0.5);
        assert!(empty.detections.is_empty() && empty.iobb == 0.0 && empty.iou == 0.0);
    }
}
