//! GPU time per kind of dispatch in decode steps and prefill chunks, from timestamp queries: where the
//! forward's time goes (issue 25: the larger models' WGSL decode step is 1.6-2.4x the CUDA path's,
//! their prefill 3-15x). While profiling, each dispatch is recorded in a compute pass of its own with
//! timestamps at its beginning and end, so a profiled forward runs slower than a plain one; what it
//! reports is each dispatch's own time on the GPU. The results are the same as a plain forward's
//! (tests/gpu_vs_candle.rs checks it).

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

/// GPU time of one kind of dispatch in one phase of the forward.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchTime {
    /// The dispatch's name: `embed`, `norm`, `qkv`, `head_norm`, `rope`, `attention_prefill`, `scores`,
    /// `softmax`, `values`, `values_sum`, `o`, `gate_up`, `down`, `final_norm`, `lm_head`.
    pub what: &'static str,
    /// Dispatches of this kind per run (a decode step or a prefill chunk).
    pub per_run: usize,
    /// Mean GPU seconds per run of all of them together.
    pub seconds_per_run: f64,
}

/// The profiled runs of one phase: decode steps, or prefill chunks (a prompt's prefill submits one
/// chunk per [`crate::GpuModel::prefill_chunk`] tokens).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PhaseProfile {
    pub runs: usize,
    /// Tokens the runs processed (one a decode step; a chunk's rows).
    pub tokens: usize,
    /// By kind, the most time first.
    pub dispatches: Vec<DispatchTime>,
}

impl PhaseProfile {
    /// Mean GPU seconds per run of every dispatch (the gaps between passes not included).
    pub fn seconds_per_run(&self) -> f64 {
        self.dispatches.iter().map(|d| d.seconds_per_run).sum()
    }
}

/// What [`crate::GpuModel::take_profile`] returns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ForwardProfile {
    pub decode: PhaseProfile,
    pub prefill: PhaseProfile,
}

/// The phases a profile keeps apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Decode,
    Prefill,
}

/// Timestamp queries and their readback for the dispatches of one run (a step or a prefill chunk).
pub(crate) struct Profiler {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Dispatches a run may have (two timestamps each).
    capacity: usize,
    period_ns: f64,
    /// Per phase: runs and tokens.
    runs: BTreeMap<Phase, (usize, usize)>,
    /// Per phase and kind: dispatches and nanoseconds over every profiled run.
    totals: BTreeMap<(Phase, &'static str), (usize, f64)>,
}

impl Profiler {
    /// Needs a device created with `Features::TIMESTAMP_QUERY`; `capacity` dispatches a run.
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue, capacity: usize) -> Result<Self> {
        if !device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(GpuError::Invalid("profiling needs timestamp queries, which this adapter does not offer".into()));
        }
        let queries = 2 * capacity as u32;
        if queries > wgpu::QUERY_SET_MAX_QUERIES {
            return Err(GpuError::Invalid(format!("a run of {capacity} dispatches needs more timestamp queries than a query set holds")));
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
            runs: BTreeMap::new(),
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

    /// Asks for the readback of a submitted run's timestamps; resolves once the caller has waited for
    /// the device.
    pub fn map(&self, dispatches: usize) -> Signal<std::result::Result<(), wgpu::BufferAsyncError>> {
        let (tx, rx) = signal();
        self.readback.slice(..dispatches as u64 * 16).map_async(wgpu::MapMode::Read, move |r| tx.send(r));
        rx
    }

    /// Adds a run's times, dispatch by dispatch, to the totals of `phase`, once [`Profiler::map`]'s
    /// signal has resolved to `mapped` (a failed or dropped map is an error).
    pub fn add(
        &mut self,
        mapped: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
        phase: Phase,
        tokens: usize,
        what: &[&'static str],
    ) -> Result<()> {
        match mapped {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(GpuError::Readback(format!("profile timestamps: {e}"))),
            None => return Err(GpuError::Readback("the GPU dropped the profile's map callback".into())),
        }
        let stamps: Vec<u64> = {
            let view = self.readback.slice(..what.len() as u64 * 16).get_mapped_range().map_err(|e| GpuError::Readback(e.to_string()))?;
            bytemuck::cast_slice::<u8, u64>(&view).to_vec()
        };
        self.readback.unmap();
        for (i, w) in what.iter().enumerate() {
            let ns = stamps[2 * i + 1].saturating_sub(stamps[2 * i]) as f64 * self.period_ns;
            let entry = self.totals.entry((phase, w)).or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += ns;
        }
        let runs = self.runs.entry(phase).or_insert((0, 0));
        runs.0 += 1;
        runs.1 += tokens;
        Ok(())
    }

    /// The totals so far as means per run, and a fresh start.
    pub fn take(&mut self) -> ForwardProfile {
        let runs = std::mem::take(&mut self.runs);
        let totals = std::mem::take(&mut self.totals);
        let phase = |phase: Phase| {
            let (n, tokens) = runs.get(&phase).copied().unwrap_or((0, 0));
            let mut dispatches: Vec<DispatchTime> = totals
                .iter()
                .filter(|((p, _), _)| *p == phase)
                .map(|((_, what), (count, ns))| DispatchTime {
                    what,
                    per_run: count / n.max(1),
                    seconds_per_run: ns * 1e-9 / n.max(1) as f64,
                })
                .collect();
            dispatches.sort_by(|a, b| b.seconds_per_run.total_cmp(&a.seconds_per_run));
            PhaseProfile { runs: n, tokens, dispatches }
        };
        ForwardProfile { decode: phase(Phase::Decode), prefill: phase(Phase::Prefill) }
    }
}
