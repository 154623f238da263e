//! Peak memory while a length is tested: the GPU's memory in use (driver query) on CUDA, the
//! process's peak resident set on the CPU.

use headscope_model::Device;

/// A peak-memory sampler for one device.
pub struct Monitor {
    #[cfg(feature = "cuda")]
    gpu: Option<gpu::Sampler>,
    cpu: bool,
}

impl Monitor {
    /// Starts sampling `device`.
    pub fn start(device: &Device) -> Self {
        #[cfg(feature = "cuda")]
        {
            Monitor { gpu: gpu::Sampler::start(device), cpu: device.is_cpu() }
        }
        #[cfg(not(feature = "cuda"))]
        {
            Monitor { cpu: device.is_cpu() }
        }
    }

    /// The device's total memory, when known (CUDA).
    pub fn total(&self) -> Option<u64> {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.gpu {
            return Some(g.total);
        }
        None
    }

    /// Forgets the peak so far (the next figure covers what follows).
    pub fn reset_peak(&self) {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.gpu {
            g.reset();
        }
    }

    /// The peak since the last reset.
    pub fn peak(&self) -> Option<u64> {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.gpu {
            return Some(g.peak());
        }
        if self.cpu {
            return peak_rss();
        }
        None
    }

    /// How the figure is measured, for the report.
    pub fn method(&self) -> &'static str {
        #[cfg(feature = "cuda")]
        if self.gpu.is_some() {
            return "GPU memory in use (whole device, CUDA context included): cuMemGetInfo polled every 1 ms during each length's tests";
        }
        if self.cpu {
            "peak resident set of the process (VmHWM), since start"
        } else {
            "not measured"
        }
    }
}

/// VmHWM of /proc/self/status in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(feature = "cuda")]
mod gpu {
    use headscope_model::candle_core::cuda_backend::cudarc::driver::CudaContext;
    use headscope_model::Device;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::thread::JoinHandle;
    use std::time::Duration;

    /// A thread that polls free/total memory and keeps the largest amount in use.
    pub struct Sampler {
        /// The device's total memory in bytes.
        pub total: u64,
        peak: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<()>>,
    }

    impl Sampler {
        /// Starts polling `device` (None when it is not a CUDA device or the query fails).
        pub fn start(device: &Device) -> Option<Self> {
            let ctx: Arc<CudaContext> = device.as_cuda_device().ok()?.cuda_stream().context().clone();
            let (free, total) = ctx.mem_get_info().ok()?;
            let peak = Arc::new(AtomicU64::new((total - free) as u64));
            let stop = Arc::new(AtomicBool::new(false));
            let (p, s) = (peak.clone(), stop.clone());
            let handle = std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Ok((free, total)) = ctx.mem_get_info() {
                        p.fetch_max((total - free) as u64, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            Some(Sampler { total: total as u64, peak, stop, handle: Some(handle) })
        }

        /// Forgets the peak so far.
        pub fn reset(&self) {
            self.peak.store(0, Ordering::Relaxed);
        }

        /// The most memory in use since the last reset, in bytes.
        pub fn peak(&self) -> u64 {
            self.peak.load(Ordering::Relaxed)
        }
    }

    impl Drop for Sampler {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }
}
