//! A layer's unquantized weights: the source of its FP8 weights and of the
//! f64 reference the FP8 layer is checked against.

use crate::error::QuantError;
use crate::fp8::quant::ScaleMode;
use crate::matrix::Matrix;
use crate::moe::config::MoeConfig;
use crate::moe::expert::{ExpertMaster, ExpertWeights};
use crate::moe::gate::{Gate, TopK};
use crate::moe::layer::MoeLayer;
use crate::random::scaled_normal_matrix;

/// Gate, shared expert and routed experts in f32.
#[derive(Clone, Debug)]
pub struct LayerMaster {
    config: MoeConfig,
    gate: Gate,
    shared: ExpertMaster,
    experts: Vec<ExpertMaster>,
}

impl LayerMaster {
    /// Random weights (variance 1/fan-in) and a zero gate bias.
    pub fn random(config: &MoeConfig, rng: &mut impl rand::Rng) -> Self {
        let (hidden, width) = (config.hidden(), config.expert_width());
        let gate_weight = scaled_normal_matrix(
            rng,
            config.num_experts(),
            hidden,
            1.0 / (hidden as f32).sqrt(),
        );
        let gate = Gate::new(config, gate_weight, vec![0.0; config.num_experts()])
            .expect("shapes come from the config");
        let shared = ExpertMaster::random(rng, hidden, width);
        let experts = (0..config.num_experts())
            .map(|_| ExpertMaster::random(rng, hidden, width))
            .collect();
        LayerMaster {
            config: config.clone(),
            gate,
            shared,
            experts,
        }
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The FP8 layer (gate and shared expert) and the FP8 routed experts,
    /// indexed by logical expert (the host copy a node loads slots from).
    pub fn quantize(&self, mode: ScaleMode) -> Result<(MoeLayer, Vec<ExpertWeights>), QuantError> {
        let shared = self.shared.quantize(mode)?;
        let layer = MoeLayer::new(self.config.clone(), self.gate.clone(), shared, mode)?;
        let experts = self
            .experts
            .iter()
            .map(|e| e.quantize(mode))
            .collect::<Result<_, _>>()?;
        Ok((layer, experts))
    }

    /// The layer in f64 on unquantized weights, with a given routing.
    ///
    /// # Panics
    /// If `hidden` or `routing` do not match the layer (a caller bug).
    pub fn reference_forward(&self, hidden: &Matrix<f32>, routing: &TopK) -> Matrix<f64> {
        assert_eq!(hidden.cols(), self.config.hidden(), "hidden width");
        assert_eq!(routing.tokens(), hidden.rows(), "routing tokens");
        let mut out = Vec::with_capacity(hidden.rows() * hidden.cols());
        for t in 0..hidden.rows() {
            let x: Vec<f64> = hidden.row(t).iter().map(|&v| f64::from(v)).collect();
            let mut y = self.shared.forward_f64(&x);
            for (&e, &gate) in routing.experts_of(t).iter().zip(routing.gates_of(t)) {
                for (acc, v) in y.iter_mut().zip(self.experts[e as usize].forward_f64(&x)) {
                    *acc += f64::from(gate) * v;
                }
            }
            out.extend(y);
        }
        Matrix::new(hidden.rows(), hidden.cols(), out).expect("rows x hidden values")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accuracy::reference::rel_frobenius;
    use crate::moe::config::small_spec;
    use crate::moe::layer::SlotWeights;
    use crate::moe::placement::Placement;
    use crate::random::normal_matrix;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn setup() -> (MoeConfig, LayerMaster, Matrix<f32>) {
        let config = MoeConfig::new(small_spec()).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let master = LayerMaster::random(&config, &mut rng);
        let hidden = normal_matrix(&mut rng, 40, config.hidden());
        (config, master, hidden)
    }

    #[test]
    fn fp8_layer_is_within_the_expected_error_of_f64() {
        let (_, master, hidden) = setup();
        let (layer, experts) = master.quantize(ScaleMode::Exact).unwrap();
        let slots: Vec<&ExpertWeights> = experts.iter().collect();
        let placement = Placement::new((0..16).collect(), 16, None).unwrap();
        let out = layer.forward(&hidden, &placement, &slots[..]).unwrap();
        assert_eq!(out.remote_assignments, 0);
        let reference = master.reference_forward(&hidden, &out.routing);
        let err = rel_frobenius(out.output.data(), reference.data());
        // Two FP8 GEMMs per expert plus the re-quantized intermediate: the
        // DeepSeek-style layer lands near 6e-2.
        assert!(err > 0.02 && err < 0.08, "{err}");
    }

    #[test]
    fn output_does_not_depend_on_replicas_or_split() {
        let (_, master, hidden) = setup();
        let (layer, experts) = master.quantize(ScaleMode::PowerOfTwo).unwrap();
        let plain = Placement::new((0..16).collect(), 16, None).unwrap();
        let plain_slots: Vec<&ExpertWeights> = experts.iter().collect();
        let base = layer.forward(&hidden, &plain, &plain_slots[..]).unwrap();

        // 24 slots: experts 0..8 twice, in shuffled slots, weighted split.
        let row: Vec<u32> = (0..16).rev().chain(0..8).collect();
        let mut shares = vec![1.0; 24];
        for p in 0..24 {
            if row[p] < 8 {
                shares[p] = if p < 16 { 0.3 } else { 0.7 };
            }
        }
        let replicated = Placement::new(row.clone(), 16, Some(shares)).unwrap();
        let copies: Vec<ExpertWeights> = row.iter().map(|&e| experts[e as usize].clone()).collect();
        let slots: Vec<&ExpertWeights> = copies.iter().collect();
        let out = layer.forward(&hidden, &replicated, &slots[..]).unwrap();
        assert_eq!(
            out.output, base.output,
            "per-token results are bitwise independent of dispatch"
        );
        assert_ne!(out.dispatch.slot_counts()[20], 0);
    }

    #[test]
    fn given_slot_counts_drive_the_layer() {
        let (config, master, hidden) = setup();
        let (layer, experts) = master.quantize(ScaleMode::Exact).unwrap();
        let routing = master.gate().route(&config, &hidden);
        let row: Vec<u32> = (0..16).chain([5]).collect();
        let placement = Placement::new(row.clone(), 16, None).unwrap();
        let slots: Vec<&ExpertWeights> = row.iter().map(|&e| &experts[e as usize]).collect();
        let mut counts = routing.expert_counts();
        counts.push(counts[5]);
        counts[5] = 0;
        let d = crate::moe::dispatch_counts(&routing, &placement, &counts).unwrap();
        let out = layer
            .forward_dispatched(&hidden, routing.clone(), d, &slots[..])
            .unwrap();
        assert_eq!(out.dispatch.slot_counts()[5], 0);
        let even = layer
            .forward_routed(&hidden, routing, &placement, &slots[..])
            .unwrap();
        assert_eq!(out.output, even.output);
    }

    /// A node holding only some slots computes exactly their contributions.
    #[test]
    fn partial_slot_sets_sum_to_the_whole_layer() {
        struct Half<'a>(&'a [&'a ExpertWeights], bool);
        impl SlotWeights for Half<'_> {
            fn slot(&self, p: usize) -> Option<&ExpertWeights> {
                (p % 2 == usize::from(self.1)).then(|| self.0[p])
            }
        }
        let (_, master, hidden) = setup();
        let (layer, experts) = master.quantize(ScaleMode::Exact).unwrap();
        let slots: Vec<&ExpertWeights> = experts.iter().collect();
        let placement = Placement::new((0..16).collect(), 16, None).unwrap();
        let whole = layer.forward(&hidden, &placement, &slots[..]).unwrap();
        let even = layer
            .forward(&hidden, &placement, &Half(&slots, false))
            .unwrap();
        let odd = layer
            .forward(&hidden, &placement, &Half(&slots, true))
            .unwrap();
        assert_eq!(even.remote_assignments + odd.remote_assignments, 40 * 4);
        // Both halves include the shared expert once; subtract it once.
        let shared_only = layer
            .forward(&hidden, &placement, &[][..] as &[&ExpertWeights])
            .unwrap();
        for ((w, (e, o)), s) in whole
            .output
            .data()
            .iter()
            .zip(even.output.data().iter().zip(odd.output.data()))
            .zip(shared_only.output.data())
        {
            assert!(
                (w - (e + o - s)).abs() <= 1e-5 * (1.0 + w.abs()),
                "{w} vs {}",
                e + o - s
            );
        }
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        let (config, master, hidden) = setup();
        let (layer, experts) = master.quantize(ScaleMode::Exact).unwrap();
        let slots: Vec<&ExpertWeights> = experts.iter().collect();
        let placement = Placement::new((0..16).collect(), 16, None).unwrap();
        let narrow = Matrix::zeros(3, 128);
        assert!(layer.forward(&narrow, &placement, &slots[..]).is_err());
        let other = Placement::new((0..8).collect(), 8, None).unwrap();
        assert!(layer.forward(&hidden, &other, &slots[..]).is_err());
        let routing = master.gate().route(
            &config,
            &normal_matrix(&mut ChaCha8Rng::seed_from_u64(1), 5, 256),
        );
        assert!(layer
            .forward_routed(&hidden, routing, &placement, &slots[..])
            .is_err());
    }
}
