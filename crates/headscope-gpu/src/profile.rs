//! GPU time per kind of dispatch in decode steps, from timestamp queries: where a step's time goes
//! (issue 25: the larger models' WGSL decode step is 1.6-2.4x the CUDA path's). Profiled steps record
//! each dispatch in a compute pass of its own with timestamps at its beginning and end, so a profiled
//! step runs slower than a plain one; what it reports is each dispatch's own time on the GPU. The
//! results are the same as a plain step's (tests/gpu_forward.rs checks it).

use crate::error::{GpuError, Result};
use crate::signal::{signal, Signal};
use std::collections::BTreeMap;

/// One compute dispatch of a forward: what it is (its name in a profile), its pipeline, bind group and
/// workgroup grid.
pub(crate) struct Dispatch<'a> {
    pub what: &'static str,
    pub pipeline: &'a wgpu::ComputePipeline,
    pub group: &'a wgpu::BindGroup,
    pub grid: (u32, u32),
}

/// Records `dispatches` into one compute pass, setting pipelines and bind groups only where they change.
pub(crate) fn record(pass: &mut wgpu::ComputePass, dispatches: &[Dispatch]) {
    let (mut pipeline, mut group): (Option<&wgpu::ComputePipeline>, Option<&wgpu::BindGroup>) = (None, None);
    for d in dispatches {
        if !pipeline.is_some_and(|p| std::ptr::eq(p, d.pipeline)) {
            pass.set_pipeline(d.pipeline);
            pipeline = Some(d.pipeline);
        }
        if !group.is_some_and(|g| std::ptr::eq(g, d.group)) {
            pass.set_bind_group(0, d.group, &[]);
            group = Some(d.group);
        }
        pass.dispatch_workgroups(d.grid.0, d.grid.1, 1);
    }
}

/// GPU time of one kind of dispatch, summed over the profiled decode steps.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchTime {
    /// The dispatch's name: `embed`, `norm`, `qkv`, `head_norm`, `rope`, `scores`, `softmax`, `values`,
    /// `values_sum`, `o`, `gate_up`, `down`, `final_norm`, `lm_head`.
    pub what: &'static str,
    /// Dispatches of this kind per step.
    pub per_step: usize,
    /// Mean GPU seconds per step of all of them together.
    pub seconds_per_step: f64,
}

/// What [`crate::GpuModel::take_profile`] returns: the profiled steps and their dispatches' times.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepProfile {
    pub steps: usize,
    /// By kind, the most time first.
    pub dispatches: Vec<DispatchTime>,
}

impl StepProfile {
    /// Mean GPU seconds per step of every dispatch (the passes' gaps not included).
    pub fn total_seconds_per_step(&self) -> f64 {
        self.dispatches.iter().map(|d| d.seconds_per_step).sum()
    }
}

/// Timestamp queries and their readback for the dispatches of one step.
pub(crate) struct Profiler {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Dispatches a step may have (two timestamps each).
    capacity: usize,
    period_ns: f64,
    steps: usize,
    /// Per kind: dispatches and nanoseconds over every profiled step.
    totals: BTreeMap<&'static str, (usize, f64)>,
}

impl Profiler {
    /// Needs a device created with `Features::TIMESTAMP_QUERY`; `capacity` dispatches a step.
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue, capacity: usize) -> Result<Self> {
        if !device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(GpuError::Invalid("profiling needs timestamp queries, which this adapter does not offer".into()));
        }
        let queries = 2 * capacity as u32;
        if queries > wgpu::QUERY_SET_MAX_QUERIES {
            return Err(GpuError::Invalid(format!("a step of {capacity} dispatches needs more timestamp queries than a query set holds")));
        }
        let bytes = queries as u64 * 8;
        let buffer = |label: &str, usage: wgpu::BufferUsages| {
            device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: bytes, usage, mapped_at_creation: false })
        };
        Ok(Profiler {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: queries,
            }),
            resolved: buffer("profile resolved", wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            readback: buffer("profile readback", wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
            capacity,
            period_ns: queue.get_timestamp_period() as f64,
            steps: 0,
            totals: BTreeMap::new(),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records each dispatch in a pass of its own between two timestamps, then resolves them into the
    /// readback buffer.
    pub fn record(&self, enc: &mut wgpu::CommandEncoder, dispatches: &[Dispatch]) {
        for (i, d) in dispatches.iter().enumerate() {
            let writes = wgpu::ComputePassTimestampWrites {
                query_set: &self.queries,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            };
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(d.what), timestamp_writes: Some(writes) });
            record(&mut pass, std::slice::from_ref(d));
        }
        let queries = 2 * dispatches.len() as u32;
        enc.resolve_query_set(&self.queries, 0..queries, &self.resolved, 0);
        enc.copy_buffer_to_buffer(&self.resolved, 0, &self.readback, 0, queries as u64 * 8);
    }

    /// Asks for the readback of a submitted step's timestamps; resolves once the caller has waited for
    /// the device.
    pub fn map(&self, dispatches: usize) -> Signal<std::result::Result<(), wgpu::BufferAsyncError>> {
        let (tx, rx) = signal();
        self.readback.slice(..dispatches as u64 * 16).map_async(wgpu::MapMode::Read, move |r| tx.send(r));
        rx
    }

    /// Adds a mapped step's times, dispatch by dispatch, to the totals by kind.
    pub fn add(&mut self, what: &[&'static str]) -> Result<()> {
        let stamps: Vec<u64> = {
            let view = self.readback.slice(..what.len() as u64 * 16).get_mapped_range().map_err(|e| GpuError::Readback(e.to_string()))?;
            bytemuck::cast_slice::<u8, u64>(&view).to_vec()
        };
        self.readback.unmap();
        for (i, w) in what.iter().enumerate() {
            let ns = stamps[2 * i + 1].saturating_sub(stamps[2 * i]) as f64 * self.period_ns;
            let entry = self.totals.entry(w).or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += ns;
        }
        self.steps += 1;
        Ok(())
    }

    /// The totals so far as means per step, and a fresh start.
    pub fn take(&mut self) -> StepProfile {
        let steps = std::mem::take(&mut self.steps);
        let mut dispatches: Vec<DispatchTime> = std::mem::take(&mut self.totals)
            .into_iter()
            .map(|(what, (count, ns))| DispatchTime {
                what,
                per_step: count / steps.max(1),
                seconds_per_step: ns * 1e-9 / steps.max(1) as f64,
            })
            .collect();
        dispatches.sort_by(|a, b| b.seconds_per_step.total_cmp(&a.seconds_per_step));
        StepProfile { steps, dispatches }
    }
}
