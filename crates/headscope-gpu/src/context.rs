//! The GPU a run uses: adapter, device and queue, opened once and shared by every model loaded on it.
//! Where this sits: the web worker (or a native test) opens a [`GpuContext`], loads a
//! [`crate::GpuModel`] on it, and the page shows [`AdapterSummary`] so users know what computed their
//! heatmap (a real GPU, or SwiftShader/lavapipe on the CPU).

use crate::error::{GpuError, Result};
pub use crate::kernels::{GemmTile, KernelSet};
use std::sync::{Arc, Mutex};

/// `device_type` of CPU implementations.
const CPU_KIND: &str = "CPU (software)";

/// What the adapter is, in words a page can show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)", or a browser's description).
    pub name: String,
    /// Backend: "vulkan", "webgpu", ...
    pub backend: String,
    /// Kind of device: "discrete GPU", "integrated GPU", "CPU (software)", ...
    pub device_type: String,
    /// Driver name and version, when the platform reports them.
    pub driver: String,
}

impl AdapterSummary {
    fn from_info(info: &wgpu::AdapterInfo) -> Self {
        let device_type = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete GPU",
            wgpu::DeviceType::IntegratedGpu => "integrated GPU",
            wgpu::DeviceType::VirtualGpu => "virtual GPU",
            wgpu::DeviceType::Cpu => CPU_KIND,
            wgpu::DeviceType::Other => "unknown kind",
        };
        let driver =
            [info.driver.as_str(), info.driver_info.as_str()].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join(" ");
        AdapterSummary { name: info.name.clone(), backend: info.backend.to_string(), device_type: device_type.into(), driver }
    }

    /// Whether the "GPU" is a CPU implementation (SwiftShader, llvmpipe/lavapipe, a browser's fallback
    /// adapter). There the candle CPU path is several times faster than this crate (lab model, 2 cores:
    /// ~3 ms vs ~25 ms per decode step), so callers that have both should prefer candle.
    pub fn is_software(&self) -> bool {
        let name = self.name.to_ascii_lowercase();
        self.device_type == CPU_KIND || ["swiftshader", "llvmpipe", "lavapipe", "software"].iter().any(|s| name.contains(s))
    }

    /// What a reader calls it: the adapter's name, or where the browser hides it, its kind in words
    /// ("a software renderer on the CPU", "a graphics card").
    pub fn plain(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        match self.device_type.as_str() {
            "discrete GPU" => "a graphics card".into(),
            "integrated GPU" => "the built-in graphics".into(),
            "virtual GPU" => "a virtual GPU".into(),
            CPU_KIND => "a software renderer on the CPU".into(),
            _ => "a GPU the browser does not name".into(),
        }
    }

    /// One line: "name (backend, kind)".
    pub fn describe(&self) -> String {
        let name = if self.name.is_empty() { "unnamed adapter" } else { self.name.as_str() };
        format!("{name} ({}, {})", self.backend, self.device_type)
    }
}

/// An opened GPU: device, queue and what it is.
#[derive(Debug, Clone)]
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    summary: AdapterSummary,
    /// The kernels models loaded here compile.
    kernels: KernelSet,
    /// The parallel set's prefill product tile.
    gemm_tile: GemmTile,
    /// Whether the device was opened with cooperative matrices that [`GemmTile::Coop`] can use.
    coop_matrix: bool,
    /// At most this many prompt tokens per prefill submission, where set (below the kernels' own).
    pub(crate) prefill_chunk: Option<usize>,
    /// At most this many bytes per weight buffer, where set (below the device's binding limit).
    pub(crate) weight_block: Option<u64>,
    /// Errors the device reported outside any error scope (wgpu's default handler would panic).
    pub(crate) errors: Arc<Mutex<Vec<String>>>,
}

impl GpuContext {
    /// Opens the system's preferred adapter (high performance) with the largest limits it offers, so
    /// bigger models fit than WebGPU's defaults (128 MiB per storage binding) allow.
    pub async fn new() -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(no_adapter_hint(&e.to_string())))?;
        let info = adapter.get_info();
        let summary = AdapterSummary::from_info(&info);
        let coop_matrix = coop_matrix_usable(&adapter, &info);
        let coop_features = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("headscope"),
                // Timestamps where offered, for GpuModel::start_profile; cooperative matrices (and f16
                // in shaders) where GemmTile::Coop can use them.
                required_features: (adapter.features() & wgpu::Features::TIMESTAMP_QUERY)
                    | if coop_matrix { coop_features } else { wgpu::Features::empty() },
                required_limits: adapter.limits(),
                // SAFETY: the one experimental feature asked for is cooperative matrices, used by one
                // kernel (matmul_coop.wgsl) whose loads and stores stay inside workgroup arrays it
                // sizes itself; `headscope-gpu`'s bench compares its products with the other tile's.
                experimental_features: if coop_matrix {
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                } else {
                    wgpu::ExperimentalFeatures::disabled()
                },
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Device(format!("{}: {e}", summary.describe())))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let kernels = if summary.is_software() { KernelSet::Serial } else { KernelSet::Parallel };
        // GemmTile::Coop stays opt-in: on an H100 (twenty-third session) it gave the same tokens as the
        // 64-row tile but took 2-3x its time (one subgroup a workgroup, staging element by element).
        Ok(GpuContext {
            device,
            queue,
            summary,
            kernels,
            gemm_tile: GemmTile::default(),
            coop_matrix,
            prefill_chunk: None,
            weight_block: None,
            errors,
        })
    }

    /// The kernels models loaded on this context compile: parallel on a real GPU, serial on a CPU
    /// implementation (see [`KernelSet`]).
    pub fn kernel_set(&self) -> KernelSet {
        self.kernels
    }

    /// This context with another choice of kernels (tests run both on any adapter).
    pub fn with_kernel_set(mut self, kernels: KernelSet) -> Self {
        self.kernels = kernels;
        self
    }

    /// The parallel set's prefill product tile models loaded here use.
    pub fn gemm_tile(&self) -> GemmTile {
        self.gemm_tile
    }

    /// This context with another prefill product tile (the bench times them; tests hold them to candle).
    /// [`GemmTile::Coop`] needs [`GpuContext::coop_matrix`]: loading a model with it fails otherwise.
    pub fn with_gemm_tile(mut self, tile: GemmTile) -> Self {
        self.gemm_tile = tile;
        self
    }

    /// Whether this device has the cooperative matrices [`GemmTile::Coop`] runs on (chosen with
    /// [`GpuContext::with_gemm_tile`]; not the default, which is faster so far): native Vulkan (or
    /// Metal) adapters offering 16 x 16 x 16 products of f16 into f32 at subgroup scope, with subgroups
    /// of exactly 32 invocations. Browsers offer none yet.
    pub fn coop_matrix(&self) -> bool {
        self.coop_matrix
    }

    /// This context with prefill submissions of at most `rows` prompt tokens (at least 1): tests use it to
    /// cut short prompts into several chunks.
    pub fn with_prefill_chunk(mut self, rows: usize) -> Self {
        self.prefill_chunk = Some(rows.max(1));
        self
    }

    /// This context with weight buffers of at most `bytes` (at least 4 KiB): the embedding table and the
    /// LM head, which are split into blocks where the device cannot bind them whole, are split at this
    /// size instead. Tests use it to split a small model as a browser splits a large one.
    pub fn with_weight_block(mut self, bytes: u64) -> Self {
        self.weight_block = Some(bytes.max(4096));
        self
    }

    /// Whether models on this context can be profiled (the device has timestamp queries; see
    /// [`crate::GpuModel::start_profile`]).
    pub fn can_profile(&self) -> bool {
        self.device.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// What the adapter is.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// The device's limits (what the largest model and context can use).
    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// Turns errors the device reported since the last call into one [`GpuError::Device`].
    pub(crate) fn take_errors(&self) -> Result<()> {
        let mut v = self.errors.lock().map_err(|_| GpuError::Device("the error log's lock is poisoned".into()))?;
        if v.is_empty() {
            return Ok(());
        }
        let all = v.drain(..).collect::<Vec<_>>().join("; ");
        Err(GpuError::Device(all))
    }
}

/// Adds what to do to wgpu's "no adapter" message.
fn no_adapter_hint(message: &str) -> String {
    if cfg!(target_arch = "wasm32") {
        format!("{message} (this browser offers no WebGPU adapter; in Chromium try --enable-unsafe-webgpu, or use a browser with WebGPU)")
    } else {
        format!(
            "{message} (no Vulkan driver found; on Debian `apt-get install mesa-vulkan-drivers libvulkan1` gives the lavapipe CPU driver)"
        )
    }
}

/// Whether `adapter` can run `gemm_coop`: cooperative matrices and f16 in shaders, a 16 x 16 x 16
/// configuration of f16 inputs with f32 sums, and subgroups of exactly 32 (the kernel's workgroup is one
/// subgroup). `HEADSCOPE_COOP=0` in the environment keeps the device from asking for them.
fn coop_matrix_usable(adapter: &wgpu::Adapter, info: &wgpu::AdapterInfo) -> bool {
    let wanted = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
    if !adapter.features().contains(wanted) || info.subgroup_min_size != 32 || info.subgroup_max_size != 32 {
        return false;
    }
    #[cfg(not(target_arch = "wasm32"))]
    if std::env::var("HEADSCOPE_COOP").is_ok_and(|v| v == "0") {
        return false;
    }
    adapter.cooperative_matrix_properties().iter().any(|p| {
        use wgpu::CooperativeScalarType as T;
        (p.m_size, p.n_size, p.k_size) == (16, 16, 16) && p.ab_type == T::F16 && p.cr_type == T::F32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unnamed_adapter_is_called_by_its_kind() {
        let summary = |name: &str, kind: &str| AdapterSummary {
            name: name.into(),
            backend: "webgpu".into(),
            device_type: kind.into(),
            driver: String::new(),
        };
        assert_eq!(summary("NVIDIA H200", "discrete GPU").plain(), "NVIDIA H200");
        assert_eq!(summary("", CPU_KIND).plain(), "a software renderer on the CPU");
        assert_eq!(summary("", "integrated GPU").plain(), "the built-in graphics");
        assert!(!summary("", "unknown kind").plain().contains("unnamed"));
    }
}
