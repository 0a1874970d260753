//! The search loop: an initial design, then NSGA-II generations, every candidate counted
//! (parameters, multiply-adds), checked against the budgets and, when feasible, scored by an
//! [`Evaluator`] (proxy training). The archive is the loop's whole state: each generation's
//! offspring are a function of the previous population and a generation seed, so a resumed
//! search regenerates them exactly, takes the ones already in the archive from there and
//! trains the rest.

use std::collections::HashSet;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::archive::{
    Archive, Bounds, CandidateStatus, Evaluated, Generation, SearchDir, SearchDirError,
    SearchStatus, ARCHIVE_FORMAT,
};
use super::nsga2::{mutate, rank_and_crowd, survive, tournament, two_point};
use super::space::{Candidate, Space, SpaceError};
use super::surrogate::{cross_validated_tau, Rbf};
use crate::config::SearchConfig;
use crate::model::count::count;
use crate::model::spec::ArchSpec;

/// What proxy training made of a candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Mean val AUROC.
    Scored(f64),
    /// Training failed; the reason is recorded and the search goes on.
    Failed(String),
    /// Stopped by the user before it finished: not recorded.
    Abandoned,
}

pub trait Evaluator {
    fn evaluate(&mut self, candidate: &Candidate, seed: u64) -> Outcome;
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Dir(#[from] SearchDirError),
    #[error("search space: {0}")]
    Space(#[from] SpaceError),
    #[error("{0}")]
    Other(String),
}

/// Whether the surrogate chose a generation's candidates, with its cross-validated τ.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Surrogate {
    Used(Option<f64>),
    Unused(Option<f64>),
}

impl Surrogate {
    fn tau(self) -> Option<f64> {
        match self {
            Surrogate::Used(t) | Surrogate::Unused(t) => t,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Finished,
    Interrupted,
}

/// The seed of a candidate's proxy training: the search seed mixed with its phenotype, so a
/// candidate gets the same seed whenever (and in whichever run) it is trained.
pub fn candidate_seed(search_seed: u64, key: &str) -> u64 {
    // FNV-1a over the key, then the seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(search_seed.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h >> 1
}

fn generation_rng(seed: u64, generation: u32) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(
        seed ^ (u64::from(generation) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    )
}

/// A new, empty archive with its fixed normalisation bounds: the budgets where set, else
/// 1.1 × the counts of the space's largest corner.
pub fn new_archive(
    pipeline: &str,
    cfg: &SearchConfig,
    labels: &[String],
    count_resolution: u32,
) -> Result<Archive, SearchError> {
    let space = Space::new(cfg.space.clone(), i64::from(count_resolution));
    let big = space.decode(&space.corner(true))?;
    let c = count(&big.spec, labels.len() as i64, i64::from(count_resolution))
        .map_err(|e| SearchError::Other(e.to_string()))?;
    Ok(Archive {
        format: ARCHIVE_FORMAT,
        pipeline: pipeline.to_string(),
        config: cfg.clone(),
        count_resolution,
        labels: labels.to_vec(),
        bounds: Bounds {
            f1: 0.5,
            params: cfg
                .max_params
                .map_or(1.1 * c.total_params as f64, |b| b as f64),
            madds: cfg.max_madds.map_or(1.1 * c.madds as f64, |b| b as f64),
        },
        status: SearchStatus::Running,
        candidates: vec![],
        generations: vec![],
    })
}

/// Called after every recorded candidate, with the number planned in all.
pub type RowHook<'a> = Box<dyn FnMut(&Evaluated, usize) + 'a>;

/// Runs or resumes a search in `dir`; `archive` is the directory's archive (new or read).
pub struct Engine<'a, E: Evaluator> {
    pub dir: &'a SearchDir,
    pub archive: Archive,
    pub space: Space,
    pub evaluator: E,
    /// Architectures placed in the initial design when the space holds them (MUXNet-m, -l).
    pub references: Vec<ArchSpec>,
    /// Called after every recorded candidate, with the number planned in all.
    pub on_row: RowHook<'a>,
}

impl<'a, E: Evaluator> Engine<'a, E> {
    pub fn new(dir: &'a SearchDir, archive: Archive, evaluator: E) -> Self {
        let space = Space::new(
            archive.config.space.clone(),
            i64::from(archive.count_resolution),
        );
        Engine {
            dir,
            archive,
            space,
            evaluator,
            references: vec![ArchSpec::muxnet_m(), ArchSpec::muxnet_l()],
            on_row: Box::new(|_, _| {}),
        }
    }

    fn cfg(&self) -> &SearchConfig {
        &self.archive.config
    }

    fn planned(&self) -> usize {
        self.cfg().population + self.cfg().offspring * self.cfg().generations as usize
    }

    pub fn run(&mut self) -> Result<End, SearchError> {
        self.archive.status = SearchStatus::Running;
        self.dir.write_archive(&self.archive)?;
        let end = self.generations();
        self.archive.status = match end {
            Ok(End::Finished) => SearchStatus::Finished,
            _ => SearchStatus::Interrupted,
        };
        self.dir.write_archive(&self.archive)?;
        end
    }

    fn generations(&mut self) -> Result<End, SearchError> {
        let mut population = match self.archive.generations.last() {
            Some(g) => g.population.clone(),
            None => {
                let design = self.initial_design()?;
                let Some(ids) = self.evaluate_all(&design, 0)? else {
                    return Ok(End::Interrupted);
                };
                self.close_generation(0, ids, Surrogate::Unused(None))?
            }
        };
        let done = self.archive.generations.len() as u32;
        for g in done..=self.cfg().generations {
            let (offspring, surrogate) = if self.cfg().surrogate.enabled {
                self.surrogate_offspring(&population, g)
            } else {
                (self.offspring(&population, g), Surrogate::Unused(None))
            };
            let Some(ids) = self.evaluate_all(&offspring, g)? else {
                return Ok(End::Interrupted);
            };
            population.extend(ids);
            population = self.close_generation(g, population, surrogate)?;
        }
        Ok(End::Finished)
    }

    /// The corners of the space, the reference architectures it holds, then random
    /// candidates until the population is full (all distinct phenotypes).
    fn initial_design(&self) -> Result<Vec<Candidate>, SearchError> {
        let mut out: Vec<Candidate> = vec![];
        let mut seen = HashSet::new();
        let mut push = |c: Candidate, out: &mut Vec<Candidate>| {
            if seen.insert(c.key()) {
                out.push(c);
            }
        };
        for largest in [false, true] {
            if let Ok(c) = self.space.decode(&self.space.corner(largest)) {
                push(c, &mut out);
            }
        }
        for r in &self.references {
            if let Ok(g) = self.space.encode(r) {
                push(self.space.decode(&g)?, &mut out);
            }
        }
        let mut rng = generation_rng(self.cfg().seed, 0);
        let mu = self.cfg().population;
        let mut tries = 0;
        while out.len() < mu && tries < 1000 * mu {
            tries += 1;
            if let Ok(c) = self.space.decode(&self.space.random_genome(&mut rng)) {
                push(c, &mut out);
            }
        }
        out.truncate(mu.max(2));
        Ok(out)
    }

    /// Keys of the candidates of generations before `g`: offspring of `g` must differ from
    /// them (and the archive's rows of `g` itself are not looked at, so a resumed generation
    /// breeds exactly what the interrupted one did).
    fn earlier_keys(&self, g: u32) -> HashSet<String> {
        self.archive
            .candidates
            .iter()
            .filter(|c| c.generation < g)
            .map(Evaluated::key)
            .collect()
    }

    /// Up to `lambda` new candidates bred from `parents` (genomes, with their ranks and
    /// crowding distances) by tournament, two-point crossover and mutation; each is decoded,
    /// repaired and kept only if its phenotype is not in `seen`.
    fn breed(
        &self,
        rng: &mut ChaCha8Rng,
        parents: &[&[usize]],
        ranks: &[usize],
        crowd: &[f64],
        lambda: usize,
        seen: &mut HashSet<String>,
    ) -> Vec<Candidate> {
        let card = self.space.cardinalities();
        let p_mut = self
            .cfg()
            .mutation
            .unwrap_or(1.0 / self.space.genes() as f64);
        let mut out = vec![];
        let mut tries = 0;
        while out.len() < lambda && tries < 200 * lambda {
            tries += 1;
            let a = parents[tournament(rng, ranks, crowd)];
            let b = parents[tournament(rng, ranks, crowd)];
            let (mut x, mut y) = two_point(rng, a, b, self.cfg().crossover);
            for child in [&mut x, &mut y] {
                mutate(rng, child, &card, p_mut);
                if let Ok(c) = self.space.decode(child) {
                    if out.len() < lambda && seen.insert(c.key()) {
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    /// λ new candidates bred from `population` with generation `g`'s seed.
    fn offspring(&self, population: &[usize], g: u32) -> Vec<Candidate> {
        let mut rng = generation_rng(self.cfg().seed, g);
        let mut seen = self.earlier_keys(g);
        self.breed_from(population, &mut rng, self.cfg().offspring, &mut seen)
    }

    /// Up to `lambda` candidates bred from archive rows `population`, ranked and crowded by
    /// their true objectives.
    fn breed_from(
        &self,
        population: &[usize],
        rng: &mut ChaCha8Rng,
        lambda: usize,
        seen: &mut HashSet<String>,
    ) -> Vec<Candidate> {
        let (points, violation) = self.survival_points(population);
        let (ranks, crowd) = rank_and_crowd(&points, &violation);
        let parents: Vec<&[usize]> = population
            .iter()
            .map(|&i| self.archive.candidates[i].genome.as_slice())
            .collect();
        self.breed(rng, &parents, &ranks, &crowd, lambda, seen)
    }

    /// MSuNAS's step: fit the RBF surrogate on the scored candidates of earlier generations
    /// (its cross-validated Kendall τ is the second value), run NSGA-II for
    /// `surrogate.generations` on (predicted f1, params, MAdds) from the current population,
    /// and return the best λ of its final population that are not in the archive. With
    /// too few scored candidates to fit, plain offspring.
    fn surrogate_offspring(&self, population: &[usize], g: u32) -> (Vec<Candidate>, Surrogate) {
        let (genomes, f1): (Vec<Vec<usize>>, Vec<f64>) = self
            .archive
            .candidates
            .iter()
            .filter(|c| c.generation < g && c.violation == 0.0)
            .filter_map(|c| Some((c.genome.clone(), c.f1()?)))
            .unzip();
        let card = self.space.cardinalities();
        let s = &self.cfg().surrogate;
        let model = (genomes.len() >= 2 * s.folds.max(2))
            .then(|| Rbf::fit(&card, &genomes, &f1))
            .flatten();
        let Some(model) = model else {
            return (self.offspring(population, g), Surrogate::Unused(None));
        };
        let tau = cross_validated_tau(&card, &genomes, &f1, s.folds.max(2));
        // A surrogate that ranks held-back candidates no better than chance would only
        // steer the search by its noise: then the generation breeds as plain NSGA-II.
        if tau.is_none_or(|t| t <= 0.0) {
            return (self.offspring(population, g), Surrogate::Unused(tau));
        }
        let mut rng = generation_rng(self.cfg().seed, g);
        let pop = self.evolve_on_surrogate(&model, population, &mut rng);
        let known = self.earlier_keys(g);
        let mut out: Vec<Candidate> = pop
            .into_iter()
            .filter(|c| !known.contains(&c.key()))
            .take(self.cfg().offspring)
            .collect();
        if out.len() < self.cfg().offspring {
            // Top up with plain offspring so every generation trains λ candidates.
            let mut seen: HashSet<String> = known;
            seen.extend(out.iter().map(Candidate::key));
            let more = self.cfg().offspring - out.len();
            out.extend(self.breed_from(population, &mut rng, more, &mut seen));
        }
        (out, Surrogate::Used(tau))
    }

    /// NSGA-II for `surrogate.generations` on (predicted f1, params, MAdds), all cheap,
    /// starting from the current population; its final population, best first.
    fn evolve_on_surrogate(
        &self,
        model: &Rbf,
        population: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> Vec<Candidate> {
        let b = self.archive.bounds;
        let cheap = |c: &Candidate| -> (Vec<f64>, f64) {
            let n = count(
                &c.spec,
                self.archive.labels.len() as i64,
                i64::from(self.archive.count_resolution),
            );
            let (params, madds) = n.map_or((f64::INFINITY, f64::INFINITY), |n| {
                (n.total_params as f64, n.madds as f64)
            });
            let v = self.violation(params as u64, madds as u64);
            (
                vec![
                    model.predict(&c.genome) / b.f1,
                    params / b.params,
                    madds / b.madds,
                ],
                v,
            )
        };
        let mut pop: Vec<Candidate> = population
            .iter()
            .filter_map(|&i| self.space.decode(&self.archive.candidates[i].genome).ok())
            .collect();
        // Objectives of `pop`, kept beside it: each candidate is counted and predicted once.
        let (mut pts, mut viol): (Vec<Vec<f64>>, Vec<f64>) = pop.iter().map(&cheap).unzip();
        let mu = self.cfg().population;
        for _ in 0..self.cfg().surrogate.generations {
            let (ranks, crowd) = rank_and_crowd(&pts, &viol);
            let parents: Vec<&[usize]> = pop.iter().map(|c| c.genome.as_slice()).collect();
            let mut seen: HashSet<String> = pop.iter().map(Candidate::key).collect();
            let children = self.breed(rng, &parents, &ranks, &crowd, mu, &mut seen);
            for c in children {
                let (p, v) = cheap(&c);
                pts.push(p);
                viol.push(v);
                pop.push(c);
            }
            let kept = survive(&pts, &viol, mu);
            pop = kept.iter().map(|&k| pop[k].clone()).collect();
            pts = kept.iter().map(|&k| pts[k].clone()).collect();
            viol = kept.iter().map(|&k| viol[k]).collect();
        }
        pop
    }

    /// Relative budget excess: Σ max(0, value / budget − 1).
    fn violation(&self, params: u64, madds: u64) -> f64 {
        let over = |v: u64, budget: Option<u64>| {
            budget.map_or(0.0, |b| (v as f64 / b as f64 - 1.0).max(0.0))
        };
        over(params, self.cfg().max_params) + over(madds, self.cfg().max_madds)
    }

    /// Objectives for survival: scored candidates by (1 − AUROC, params, MAdds) in
    /// normalised units; an untrained infeasible one stands at f1 = 1 (it loses to every
    /// feasible one by its violation anyway).
    fn survival_points(&self, ids: &[usize]) -> (Vec<Vec<f64>>, Vec<f64>) {
        let b = self.archive.bounds;
        ids.iter()
            .map(|&i| {
                let c = &self.archive.candidates[i];
                let f1 = c.f1().map_or(1.0, |f| f / b.f1);
                (
                    vec![f1, c.params as f64 / b.params, c.madds as f64 / b.madds],
                    c.violation,
                )
            })
            .unzip()
    }

    /// Survival over `ids` (failed candidates never survive), then the generation's record.
    fn close_generation(
        &mut self,
        g: u32,
        ids: Vec<usize>,
        surrogate: Surrogate,
    ) -> Result<Vec<usize>, SearchError> {
        let alive: Vec<usize> = ids
            .into_iter()
            .filter(|&i| self.archive.candidates[i].status != CandidateStatus::Failed)
            .collect();
        let (points, violation) = self.survival_points(&alive);
        let kept: Vec<usize> = survive(&points, &violation, self.cfg().population)
            .into_iter()
            .map(|k| alive[k])
            .collect();
        if kept.is_empty() {
            return Err(SearchError::Other(format!(
                "generation {g}: every candidate failed (see reason in {})",
                self.dir.archive().display()
            )));
        }
        self.archive.generations.push(Generation {
            generation: g,
            population: kept.clone(),
            evaluated: self.archive.candidates.len(),
            hypervolume: self.archive.hypervolume(),
            front_size: self.archive.front().len(),
            surrogate_tau: surrogate.tau(),
            surrogate_used: matches!(surrogate, Surrogate::Used(_)),
        });
        self.dir.write_archive(&self.archive)?;
        self.dir
            .log_line(self.archive.generations.last().expect("just pushed"))?;
        Ok(kept)
    }

    /// Evaluates the candidates not yet in the archive for generation `g`; the archive ids of
    /// all of them, or None when the user stopped the search.
    fn evaluate_all(
        &mut self,
        cands: &[Candidate],
        g: u32,
    ) -> Result<Option<Vec<usize>>, SearchError> {
        let mut ids = vec![];
        for c in cands {
            let key = c.key();
            let done = self
                .archive
                .candidates
                .iter()
                .position(|e| e.generation == g && e.key() == key);
            let id = match done {
                Some(id) => id,
                None => match self.evaluate_one(c, g)? {
                    Some(id) => id,
                    None => return Ok(None),
                },
            };
            ids.push(id);
        }
        Ok(Some(ids))
    }

    fn evaluate_one(&mut self, c: &Candidate, g: u32) -> Result<Option<usize>, SearchError> {
        let cfg = self.cfg().clone();
        let counts = count(
            &c.spec,
            self.archive.labels.len() as i64,
            i64::from(self.archive.count_resolution),
        )
        .map_err(|e| SearchError::Other(e.to_string()))?;
        let violation = self.violation(counts.total_params, counts.madds);
        let seed = candidate_seed(cfg.seed, &c.key());
        let started = Instant::now();
        let (status, val_auroc, reason) = if violation > 0.0 {
            (
                CandidateStatus::Infeasible,
                None,
                Some("over budget: not trained".to_string()),
            )
        } else {
            match self.evaluator.evaluate(c, seed) {
                Outcome::Scored(a) => (CandidateStatus::Ok, Some(a), None),
                Outcome::Failed(why) => (CandidateStatus::Failed, None, Some(why)),
                Outcome::Abandoned => return Ok(None),
            }
        };
        let id = self.archive.candidates.len();
        let row = Evaluated {
            id,
            generation: g,
            genome: c.genome.clone(),
            arch_def: c.spec.arch_def.clone(),
            head: c.spec.num_features,
            params: counts.total_params,
            madds: counts.madds,
            status,
            val_auroc,
            reason,
            violation,
            seed,
            seconds: started.elapsed().as_secs_f64(),
            finished_at: crate::process::timestamp(),
        };
        let mut spec = c.spec.clone();
        spec.name = Some(format!("search_{}", row.name()));
        spec.num_classes = Some(self.archive.labels.len() as i64);
        self.dir.write_arch(&self.dir.arch_file(id), &spec)?;
        self.archive.candidates.push(row.clone());
        self.dir.write_archive(&self.archive)?;
        self.dir.log_line(&row)?;
        let planned = self.planned();
        (self.on_row)(&row, planned);
        Ok(Some(id))
    }
}
