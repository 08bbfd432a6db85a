//! A fixed scenario set drawn once: every scenario's initial state and the noise of every step,
//! from the scenario's own random stream (the same numbers `simulate` uses), stored in the batch
//! layout so that a rollout copies them in without touching the interpreter.

use rayon::prelude::*;

use crate::backend::{Buffers, Machine, RunError};
use crate::ir::{BufferId, BufferKind, Module};
use crate::random::{ScenarioSet, scenario_stream};

#[derive(Clone, Debug)]
pub struct Scenarios {
    pub set: ScenarioSet,
    pub count: usize,
    /// Per state buffer: (buffer, values of all scenarios, scenario-major).
    pub init: Vec<(BufferId, Vec<f64>)>,
    /// Per step, per noise buffer: (buffer, values of all scenarios, scenario-major).
    pub noise: Vec<Vec<(BufferId, Vec<f64>)>>,
}

impl Scenarios {
    /// Draws `count` scenarios of `set` with `seed`, in parallel; the result does not depend on
    /// the number of threads.
    pub fn draw(
        module: &Module,
        instance: &Buffers,
        seed: u64,
        set: ScenarioSet,
        count: usize,
    ) -> Result<Scenarios, RunError> {
        let states: Vec<BufferId> = module.buffers_of(|k| *k == BufferKind::State).map(|(id, _)| id).collect();
        let noises: Vec<BufferId> = module.buffers_of(|k| *k == BufferKind::Noise).map(|(id, _)| id).collect();
        let horizon = module.horizon as usize;
        // Per scenario: its initial states, then its noise per step.
        type Drawn = (Vec<Vec<f64>>, Vec<Vec<Vec<f64>>>);
        let drawn: Vec<Drawn> = (0..count)
            .into_par_iter()
            .map(|index| {
                let mut buffers = instance.clone();
                let mut world = scenario_stream(seed, set, index as u64);
                Machine::new(module, &mut buffers, Some(&mut world)).run(&module.init)?;
                let init = states.iter().map(|&id| buffers.values[id].clone()).collect();
                let mut noise = Vec::with_capacity(horizon);
                for _ in 0..horizon {
                    Machine::new(module, &mut buffers, Some(&mut world)).run(&module.noise)?;
                    noise.push(noises.iter().map(|&id| buffers.values[id].clone()).collect());
                }
                Ok((init, noise))
            })
            .collect::<Result<_, RunError>>()?;
        let gather =
            |values: &dyn Fn(&Drawn) -> &Vec<f64>| drawn.iter().flat_map(|d| values(d).iter().copied()).collect();
        let init = states.iter().enumerate().map(|(k, &id)| (id, gather(&|d: &Drawn| &d.0[k]))).collect();
        let noise = (0..horizon)
            .map(|t| noises.iter().enumerate().map(|(k, &id)| (id, gather(&|d: &Drawn| &d.1[t][k]))).collect())
            .collect();
        Ok(Scenarios { set, count, init, noise })
    }

    /// The mean absolute value of the noise: the size of what flows through the model, used to
    /// scale the first actions on a half-line. 1 without noise.
    pub fn noise_scale(&self) -> f64 {
        let (mut sum, mut n) = (0.0, 0usize);
        for step in &self.noise {
            for (_, values) in step {
                sum += values.iter().map(|v| v.abs()).sum::<f64>();
                n += values.len();
            }
        }
        if n == 0 || sum == 0.0 { 1.0 } else { (sum / n as f64).max(1e-6) }
    }
}
