//! Element types, enumerations and the model shape.
use crate::error::{Error, Result, Status};
use kvbits_sys as ffi;

/// Element type of an input tensor (`kvb_dtype`). Outputs are always `f32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    pub(crate) fn raw(self) -> ffi::kvb_dtype {
        match self {
            Dtype::F32 => ffi::KVB_DTYPE_F32,
            Dtype::F16 => ffi::KVB_DTYPE_F16,
            Dtype::Bf16 => ffi::KVB_DTYPE_BF16,
        }
    }
}

/// The 16-bit element types, for inputs passed as raw `u16` bit patterns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HalfDtype {
    /// IEEE 754 binary16.
    F16,
    /// bfloat16 (the upper half of an `f32`).
    Bf16,
}

impl From<HalfDtype> for Dtype {
    fn from(h: HalfDtype) -> Dtype {
        match h {
            HalfDtype::F16 => Dtype::F16,
            HalfDtype::Bf16 => Dtype::Bf16,
        }
    }
}

/// Where a context runs (`kvb_backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The CPU reference backend.
    Cpu,
    /// One CUDA device.
    Cuda,
    /// CUDA if this build and machine have a device, else the CPU.
    Auto,
}

impl Backend {
    pub(crate) fn raw(self) -> ffi::kvb_backend {
        match self {
            Backend::Cpu => ffi::KVB_BACKEND_CPU,
            Backend::Cuda => ffi::KVB_BACKEND_CUDA,
            Backend::Auto => ffi::KVB_BACKEND_AUTO,
        }
    }

    pub(crate) fn from_raw(raw: ffi::kvb_backend) -> Option<Backend> {
        match raw {
            ffi::KVB_BACKEND_CPU => Some(Backend::Cpu),
            ffi::KVB_BACKEND_CUDA => Some(Backend::Cuda),
            ffi::KVB_BACKEND_AUTO => Some(Backend::Auto),
            _ => None,
        }
    }
}

// The C enums travel as int32_t fields; each Rust enum converts both ways.
macro_rules! c_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $value:path),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),*
        }

        impl $name {
            pub(crate) fn raw(self) -> i32 {
                match self {
                    $($name::$variant => $value as i32),*
                }
            }

            pub(crate) fn from_raw(raw: i32) -> Result<$name> {
                $(if raw == $value as i32 {
                    return Ok($name::$variant);
                })*
                Err(Error::new(
                    Status::Unsupported,
                    format!("{} value {} is unknown to this binding (a newer library?)", stringify!($name), raw),
                ))
            }
        }
    };
}

c_enum! {
    /// How RoPE pairs dimensions (`kvb_rope_layout`).
    RopeLayout {
        /// Dimension i pairs with i + D/2 (Hugging Face).
        SplitHalf = ffi::KVB_ROPE_SPLIT_HALF,
        /// Dimension 2i pairs with 2i + 1.
        Interleaved = ffi::KVB_ROPE_INTERLEAVED,
    }
}

c_enum! {
    /// How a plan allocates key bits (`kvb_method`).
    Method {
        /// RoPE-aware per-block allocation.
        BlockGtq = ffi::KVB_METHOD_BLOCK_GTQ,
        /// The same bits for every block (the TurboQuant-MSE baseline).
        UniformTqMse = ffi::KVB_METHOD_UNIFORM_TQ_MSE,
    }
}

c_enum! {
    /// How the calibrator scores a RoPE block from its mean energies Eq, Ek (`kvb_score`).
    Score {
        /// (Eq + Ek) / 2.
        Energy = ffi::KVB_SCORE_ENERGY,
        /// Eq * Ek.
        Product = ffi::KVB_SCORE_PRODUCT,
    }
}

c_enum! {
    /// Scalar codebooks of the quantizer (`kvb_codebooks`).
    Codebooks {
        LloydMax = ffi::KVB_CODEBOOKS_LLOYD_MAX,
        Reference = ffi::KVB_CODEBOOKS_REFERENCE,
    }
}

/// The attention shape of a model (`kvb_model_shape`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelShape {
    /// 1..4096.
    pub n_layers: u32,
    /// 1..65536, a multiple of `n_kv_heads` (GQA).
    pub n_q_heads: u32,
    /// 1..4096.
    pub n_kv_heads: u32,
    /// Even, 2..1024.
    pub head_dim: u32,
    /// Even, 2..head_dim (partial rotary); 0 = head_dim.
    pub rotary_dim: u32,
    pub rope_layout: RopeLayout,
    /// Finite, > 1.
    pub rope_theta: f64,
}

impl ModelShape {
    /// A shape with the library's defaults for the rest: full rotary, split-half RoPE, theta
    /// 10000.
    pub fn new(n_layers: u32, n_q_heads: u32, n_kv_heads: u32, head_dim: u32) -> ModelShape {
        let mut raw: ffi::kvb_model_shape = unsafe { std::mem::zeroed() };
        unsafe { ffi::kvb_model_shape_default(&mut raw) };
        ModelShape {
            n_layers,
            n_q_heads,
            n_kv_heads,
            head_dim,
            rotary_dim: raw.rotary_dim,
            rope_layout: RopeLayout::from_raw(raw.rope_layout).unwrap_or(RopeLayout::SplitHalf),
            rope_theta: raw.rope_theta,
        }
    }

    pub(crate) fn to_raw(self) -> ffi::kvb_model_shape {
        let mut raw: ffi::kvb_model_shape = unsafe { std::mem::zeroed() };
        unsafe { ffi::kvb_model_shape_default(&mut raw) };
        raw.n_layers = self.n_layers;
        raw.n_q_heads = self.n_q_heads;
        raw.n_kv_heads = self.n_kv_heads;
        raw.head_dim = self.head_dim;
        raw.rotary_dim = self.rotary_dim;
        raw.rope_layout = self.rope_layout.raw();
        raw.rope_theta = self.rope_theta;
        raw
    }
}
