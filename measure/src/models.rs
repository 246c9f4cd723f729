//! # BitNet models' ternary linear stacks
//!
//! Every ternary linear layer of a transformer block, with the shapes of the
//! real models (`N × K` = out × in features). Attention itself (softmax,
//! KV cache), norms and embeddings are excluded: this measures the **linear
//! stack**, and is labelled so wherever it is shown.

/// A BitNet model's dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    /// Name.
    pub name: &'static str,
    /// Hidden size.
    pub hidden: usize,
    /// FFN (intermediate) size.
    pub ffn: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Output width of the k and v projections (grouped-query attention).
    pub kv_dim: usize,
}

/// The three models of the report.
pub const MODELS: [ModelConfig; 3] = [
    ModelConfig { name: "bitnet_b1_58-large", hidden: 1536, ffn: 4096, layers: 24, kv_dim: 1536 },
    ModelConfig { name: "bitnet_b1_58-3B", hidden: 3200, ffn: 8640, layers: 26, kv_dim: 3200 },
    ModelConfig { name: "BitNet-b1.58-2B-4T", hidden: 2560, ffn: 6912, layers: 30, kv_dim: 640 },
];

/// One linear layer of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linear {
    /// Projection name.
    pub name: &'static str,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// Which quantized input it reads: layers with the same input share one quantization.
    pub input: Input,
}

/// The activations a linear layer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The attention block's normalized input (q, k, v).
    AttentionIn,
    /// The attention output (o).
    AttentionOut,
    /// The FFN's normalized input (gate, up).
    FfnIn,
    /// The gated FFN activation (down).
    FfnMid,
}

impl ModelConfig {
    /// The block's linear layers: q, k, v, o, gate, up, down.
    pub fn linears(&self) -> [Linear; 7] {
        let (h, f, kv) = (self.hidden, self.ffn, self.kv_dim);
        [
            Linear { name: "q_proj", n: h, k: h, input: Input::AttentionIn },
            Linear { name: "k_proj", n: kv, k: h, input: Input::AttentionIn },
            Linear { name: "v_proj", n: kv, k: h, input: Input::AttentionIn },
            Linear { name: "o_proj", n: h, k: h, input: Input::AttentionOut },
            Linear { name: "gate_proj", n: f, k: h, input: Input::FfnIn },
            Linear { name: "up_proj", n: f, k: h, input: Input::FfnIn },
            Linear { name: "down_proj", n: h, k: f, input: Input::FfnMid },
        ]
    }

    /// Ternary weights in the stack.
    pub fn parameters(&self) -> u64 {
        self.layers as u64 * self.linears().iter().map(|l| (l.n * l.k) as u64).sum::<u64>()
    }

    /// Packed bytes of the stack at 2 bits per weight (device layout, K padded to 64).
    pub fn weight_bytes(&self) -> u64 {
        let padded = |k: usize| kernels_gpu::format::device_layout::padded_k(k) as u64;
        self.layers as u64 * self.linears().iter().map(|l| l.n as u64 * padded(l.k) / 4).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_published_models() {
        // bitnet_b1_58-large: 24 × (4·1536² + 3·1536·4096) = 679.5 M linear weights
        // (728.7 M with embeddings, as the original report printed).
        assert_eq!(MODELS[0].parameters(), 679_477_248);
        // BitNet b1.58 2B4T: 30 × (2·2560² + 2·640·2560 + 3·6912·2560) = 2.09 G.
        assert_eq!(MODELS[2].parameters(), 30 * (2 * 2560 * 2560 + 2 * 640 * 2560 + 3 * 6912 * 2560));
        assert_eq!(MODELS[0].weight_bytes(), MODELS[0].parameters() / 4);
    }
}
