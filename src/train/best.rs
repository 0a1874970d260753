//! Which epoch's weights are kept as best, and when to stop early. Two separate rules:
//! the best checkpoint is the val argmax, and `min_delta` only decides patience.

use crate::config::EarlyStopping as EarlyStoppingConfig;
use crate::run::Patience;

/// `best.safetensors` (and `ema_best.safetensors` with the EMA's own score) follow the
/// highest val mean AUROC: any strict improvement counts, however small.
pub struct BestCheckpoint;

impl BestCheckpoint {
    /// Records `score` of `epoch` (1-based) against the best so far (`best_score`,
    /// `best_epoch`); true when it is a new best.
    pub fn update(
        best_score: &mut Option<f64>,
        best_epoch: &mut Option<u32>,
        score: Option<f64>,
        epoch: u32,
    ) -> bool {
        let improved = match (score, *best_score) {
            (Some(s), Some(b)) => s > b,
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
pub struct EarlyStopping(pub Option<EarlyStoppingConfig>);

impl EarlyStopping {
    /// Records `score`; true when training should stop.
    pub fn update(&self, p: &mut Patience, score: Option<f64>) -> bool {
        let Some(cfg) = &self.0 else {
            return false;
        };
        let beaten = match (score, p.reference) {
            (Some(s), Some(r)) => s > r + cfg.min_delta,
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
        let es = EarlyStopping(Some(EarlyStoppingConfig {
            patience: 10,
            min_delta: 0.01,
        }));
        let (mut best_score, mut best_epoch, mut p) = (None, None, Patience::default());
        for (e, s) in scores.iter().enumerate() {
            BestCheckpoint::update(&mut best_score, &mut best_epoch, *s, e as u32 + 1);
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
        let es = EarlyStopping(Some(EarlyStoppingConfig {
            patience: 2,
            min_delta: 0.0,
        }));
        let mut p = Patience::default();
        assert!(!es.update(&mut p, Some(0.6)));
        assert!(!es.update(&mut p, Some(0.6)));
        assert!(es.update(&mut p, Some(0.59)));
        let never = EarlyStopping(None);
        assert!(!never.update(&mut Patience::default(), None));
    }
}
