//! Which epoch's weights are kept as best, and when to stop early. Two separate rules:
//! the best checkpoint is the val optimum of `train.select_by`, and `min_delta` only decides
//! patience. Both follow the same score in the same direction.

use crate::config::{EarlyStopping as EarlyStoppingConfig, SelectBy};
use crate::run::Patience;

/// The `select_by` score of one validation: None where it is undefined (no label with both
/// classes for AUROC; a non-finite loss).
pub fn selection_score(by: SelectBy, mean_auroc: Option<f64>, loss: f64) -> Option<f64> {
    match by {
        SelectBy::ValMeanAuroc => mean_auroc,
        SelectBy::ValLoss => loss.is_finite().then_some(loss),
    }
}

/// `best.safetensors` (and `ema_best.safetensors` with the EMA's own score) follow the
/// best val score: any strict improvement counts, however small.
pub struct BestCheckpoint(pub SelectBy);

impl BestCheckpoint {
    /// Records `score` of `epoch` (1-based) against the best so far (`best_score`,
    /// `best_epoch`); true when it is a new best.
    pub fn update(
        &self,
        best_score: &mut Option<f64>,
        best_epoch: &mut Option<u32>,
        score: Option<f64>,
        epoch: u32,
    ) -> bool {
        let improved = match (score, *best_score) {
            (Some(s), Some(b)) => self.0.beats(s, b, 0.0),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if improved {
            *best_score = score;
            *best_epoch = Some(epoch);
        }
        improved
    }
}

/// Stop when the val score has not beaten its reference by more than `min_delta` for
/// `patience` epochs (Keras's rule). Without a config it never stops.
pub struct EarlyStopping(pub Option<EarlyStoppingConfig>, pub SelectBy);

impl EarlyStopping {
    /// Records `score`; true when training should stop.
    pub fn update(&self, p: &mut Patience, score: Option<f64>) -> bool {
        let Some(cfg) = &self.0 else {
            return false;
        };
        let beaten = match (score, p.reference) {
            (Some(s), Some(r)) => self.1.beats(s, r, cfg.min_delta),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if beaten {
            p.reference = score;
            p.stale_epochs = 0;
        } else {
            p.stale_epochs += 1;
        }
        p.stale_epochs >= cfg.patience
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_is_the_argmax_even_for_improvements_below_min_delta() {
        // Val mean AUROC per epoch; min_delta 0.01 must not stop epoch 3 (+0.005) from
        // becoming the best checkpoint.
        let scores = [Some(0.70), Some(0.80), Some(0.805), None, Some(0.79)];
        let by = SelectBy::ValMeanAuroc;
        let es = EarlyStopping(
            Some(EarlyStoppingConfig {
                patience: 10,
                min_delta: 0.01,
            }),
            by,
        );
        let (mut best_score, mut best_epoch, mut p) = (None, None, Patience::default());
        for (e, s) in scores.iter().enumerate() {
            BestCheckpoint(by).update(&mut best_score, &mut best_epoch, *s, e as u32 + 1);
            es.update(&mut p, *s);
        }
        assert_eq!(best_epoch, Some(3));
        assert_eq!(best_score, Some(0.805));
        // Patience: epoch 3 did not beat 0.80 by 0.01, nor did 4 (undefined) or 5.
        assert_eq!(p.reference, Some(0.80));
        assert_eq!(p.stale_epochs, 3);
    }

    #[test]
    fn early_stopping_stops_after_patience_stale_epochs() {
        let es = EarlyStopping(
            Some(EarlyStoppingConfig {
                patience: 2,
                min_delta: 0.0,
            }),
            SelectBy::ValMeanAuroc,
        );
        let mut p = Patience::default();
        assert!(!es.update(&mut p, Some(0.6)));
        assert!(!es.update(&mut p, Some(0.6)));
        assert!(es.update(&mut p, Some(0.59)));
        let never = EarlyStopping(None, SelectBy::ValMeanAuroc);
        assert!(!never.update(&mut Patience::default(), None));
    }

    /// By val loss the best epoch is the lowest loss, and patience counts epochs whose loss
    /// did not fall by more than min_delta; a non-finite loss is never a best.
    #[test]
    fn by_val_loss_the_lowest_loss_wins_and_patience_follows_it() {
        let by = SelectBy::ValLoss;
        let es = EarlyStopping(
            Some(EarlyStoppingConfig {
                patience: 2,
                min_delta: 0.01,
            }),
            by,
        );
        let losses = [0.30, 0.25, 0.245, f64::NAN, 0.26];
        let (mut best, mut epoch, mut p) = (None, None, Patience::default());
        let mut stopped_at = None;
        for (e, l) in losses.iter().enumerate() {
            let s = selection_score(by, Some(0.9 - e as f64 * 0.1), *l);
            BestCheckpoint(by).update(&mut best, &mut epoch, s, e as u32 + 1);
            if es.update(&mut p, s) && stopped_at.is_none() {
                stopped_at = Some(e + 1);
            }
        }
        assert_eq!((best, epoch), (Some(0.245), Some(3)));
        // Epoch 3 fell by 0.005 only, epoch 4 is undefined: stale twice, stop after epoch 4.
        assert_eq!(stopped_at, Some(4));
        assert_eq!(p.reference, Some(0.25));
    }
}
