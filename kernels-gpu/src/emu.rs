//! # The CPU SIMT emulator
//!
//! Runs a kernel body written against [`crate::device`] on the host, so that
//! every kernel's real index math, tiling, barriers, shuffles and tensor-core
//! fragment layouts are tested on machines without a GPU.
//!
//! ## Model
//! - One OS thread per GPU thread of a block. The same threads run the blocks
//!   of the grid one after another (blocks are independent by CUDA's rules).
//! - [`crate::device::sync_threads`] is a real barrier over the block's
//!   threads, matched by call site: threads waiting at two different barriers
//!   are a reported divergence (undefined behaviour on a GPU). A thread that returns while others wait at a barrier makes the
//!   launch fail with [`EmuError::Divergence`] naming the kernel: on a GPU that
//!   is undefined behaviour (usually a hang), here it is a report.
//! - Warp collectives meet at a per-warp rendezvous: each lane publishes its
//!   operands, then each lane computes its own result exactly as the PTX ISA
//!   defines it (shuffles; `mma.m16n8k32` fragments). A lane missing from a
//!   collective is a divergence; a collective in a partial warp is a fault.
//! - Global memory views ([`crate::device::In`]/[`crate::device::Out`]) are
//!   bounds-checked; an out-of-bounds access is [`EmuError::Fault`].
//! - Dynamic shared memory is filled with the byte `0xA5` at every block
//!   start, so a kernel that reads shared memory it never wrote computes
//!   garbage here as it would on a GPU.
//! - Typed shared-memory accesses are bounds-checked and race-checked: a read
//!   of a word another thread wrote since the last barrier, or two threads
//!   writing one word between barriers, is a fault (read-then-write races and
//!   raw-pointer accesses are not tracked; compute-sanitizer's racecheck
//!   covers the GPU).
//!
//! It is slow (thousands of thread switches per barrier): small shapes only.

use std::cell::Cell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Barrier, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Largest block the emulator (and CUDA) accepts.
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Largest dynamic shared memory per block (an H100's opt-in maximum).
pub const MAX_SHARED_BYTES: u32 = 227 * 1024;
/// The byte dynamic shared memory holds at block start.
pub const SHARED_POISON: u8 = 0xA5;

pub use crate::launch::LaunchConfig;

/// Why an emulated launch failed. Every variant names the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmuError {
    /// The launch configuration itself is invalid.
    InvalidLaunch {
        /// Kernel name.
        kernel: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A barrier or warp collective that not every thread reached.
    Divergence {
        /// Kernel name.
        kernel: &'static str,
        /// Block index.
        block: [u32; 3],
        /// Which collective, and how many threads arrived vs. returned.
        what: String,
    },
    /// A thread faulted: out-of-bounds access, trap, or a panic in the body.
    Fault {
        /// Kernel name.
        kernel: &'static str,
        /// Block index.
        block: [u32; 3],
        /// Thread index.
        thread: [u32; 3],
        /// What happened.
        message: String,
    },
}

impl fmt::Display for EmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmuError::InvalidLaunch { kernel, reason } => write!(f, "kernel `{kernel}`: invalid launch: {reason}"),
            EmuError::Divergence { kernel, block, what } => {
                write!(f, "kernel `{kernel}`, block {block:?}: {what}")
            }
            EmuError::Fault { kernel, block, thread, message } => {
                write!(f, "kernel `{kernel}`, block {block:?}, thread {thread:?}: {message}")
            }
        }
    }
}

impl std::error::Error for EmuError {}

/// What an emulated thread sees of itself (through [`crate::device`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ThreadCtx {
    pub thread_idx: [u32; 3],
    pub block_idx: [u32; 3],
    pub block_dim: [u32; 3],
    pub grid_dim: [u32; 3],
    pub shared: *mut u8,
    linear: u32,
    block: *const BlockState,
    launch: *const LaunchShared,
}

thread_local! {
    static CTX: Cell<Option<ThreadCtx>> = const { Cell::new(None) };
    /// Barriers this thread has passed in the current block: all threads
    /// between the same two barriers share an epoch.
    static EPOCH: Cell<u64> = const { Cell::new(0) };
}

pub(crate) fn with_thread<R>(f: impl FnOnce(&ThreadCtx) -> R) -> R {
    match CTX.with(Cell::get) {
        Some(t) => f(&t),
        None => panic!("a device function was called outside an emulator launch"),
    }
}

/// The unwinding payload of a fault raised by the emulator itself.
struct FaultPayload(String);
/// The unwinding payload of a thread released from a broken collective.
struct Aborted;

pub(crate) fn fault(message: String) -> ! {
    resume_unwind(Box::new(FaultPayload(message)))
}

fn abort() -> ! {
    resume_unwind(Box::new(Aborted))
}

struct LaunchShared {
    kernel: &'static str,
    shared_bytes: usize,
    error: Mutex<Option<EmuError>>,
    stop: AtomicBool,
    start: Instant,
}

impl LaunchShared {
    fn record(&self, e: EmuError) {
        let mut slot = lock(&self.error);
        if slot.is_none() {
            *slot = Some(e);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A barrier that knows how many parties have left for good.
struct Rendezvous {
    parties: usize,
    state: Mutex<RvState>,
    cv: Condvar,
}

#[derive(Default)]
struct RvState {
    arrived: usize,
    exited: usize,
    generation: u64,
    broken: bool,
    /// Where the threads of the current generation are waiting.
    site: Option<Site>,
}

/// The call site of a barrier or collective (the kernel's own line, through
/// the `#[track_caller]` device API).
type Site = &'static std::panic::Location<'static>;

/// Why a rendezvous broke, for the thread that detected it.
enum Detected {
    /// Some threads arrived while others had returned.
    Exited(usize, usize),
    /// Threads arrived at two different call sites.
    Sites(Site, Site),
}

/// A broken rendezvous: `Some(why)` for the thread that detected it.
type Broken = Option<Detected>;

impl Rendezvous {
    fn new(parties: usize) -> Self {
        Rendezvous { parties, state: Mutex::new(RvState::default()), cv: Condvar::new() }
    }

    fn reset(&self) {
        let mut s = lock(&self.state);
        s.arrived = 0;
        s.exited = 0;
        s.broken = false;
        s.site = None;
    }

    fn arrive(&self, site: Site) -> Result<(), Broken> {
        let mut s = lock(&self.state);
        if s.broken {
            return Err(None);
        }
        match s.site {
            Some(waiting) if s.arrived > 0 && waiting != site => {
                s.broken = true;
                self.cv.notify_all();
                return Err(Some(Detected::Sites(waiting, site)));
            }
            _ => s.site = Some(site),
        }
        s.arrived += 1;
        if s.arrived + s.exited == self.parties {
            if s.exited > 0 {
                s.broken = true;
                self.cv.notify_all();
                return Err(Some(Detected::Exited(s.arrived, s.exited)));
            }
            s.arrived = 0;
            s.site = None;
            s.generation += 1;
            self.cv.notify_all();
            return Ok(());
        }
        let generation = s.generation;
        while s.generation == generation && !s.broken {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.generation == generation { Err(None) } else { Ok(()) }
    }

    fn exit(&self) -> Option<(usize, usize)> {
        let mut s = lock(&self.state);
        s.exited += 1;
        if !s.broken && s.arrived > 0 && s.arrived + s.exited == self.parties {
            s.broken = true;
            self.cv.notify_all();
            return Some((s.arrived, s.exited));
        }
        None
    }
}

const SLOTS_PER_LANE: usize = 10;

struct Warp {
    rendezvous: Rendezvous,
    lanes: usize,
    slots: Vec<AtomicU32>,
}

struct BlockState {
    barrier: Rendezvous,
    warps: Vec<Warp>,
    shared: *mut u8,
    shared_len: usize,
    /// Per 4-byte word of shared memory: the last typed write, as
    /// `(epoch + 1) << 20 | (thread + 1)` (0 = not written this block).
    shadow: Vec<AtomicU64>,
}

// SAFETY: the shared-memory pointer is handed to the block's emulated
// threads exactly as a GPU shares a block's shared memory; everything else
// in the struct is synchronised.
unsafe impl Sync for BlockState {}

impl BlockState {
    fn new(threads: usize, shared_len: usize) -> Self {
        let warps = (0..threads.div_ceil(32))
            .map(|w| {
                let lanes = (threads - 32 * w).min(32);
                Warp {
                    rendezvous: Rendezvous::new(lanes),
                    lanes,
                    slots: (0..32 * SLOTS_PER_LANE).map(|_| AtomicU32::new(0)).collect(),
                }
            })
            .collect();
        // u128 storage gives the 16-byte alignment the device guarantees.
        let words = shared_len.div_ceil(16).max(1);
        let shared = Box::into_raw(vec![0u128; words].into_boxed_slice()) as *mut u8;
        let shadow = (0..words * 4).map(|_| AtomicU64::new(0)).collect();
        BlockState { barrier: Rendezvous::new(threads), warps, shared, shared_len: words * 16, shadow }
    }

    fn reset(&self) {
        self.barrier.reset();
        for w in &self.warps {
            w.rendezvous.reset();
        }
        // SAFETY: no emulated thread runs between the two gate waits that enclose reset().
        unsafe { std::ptr::write_bytes(self.shared, SHARED_POISON, self.shared_len) };
        for w in &self.shadow {
            w.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for BlockState {
    fn drop(&mut self) {
        let words = self.shared_len / 16;
        // SAFETY: allocated in new() as a boxed slice of `words` u128.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.shared as *mut u128, words)) });
    }
}

fn current() -> (ThreadCtx, &'static BlockState, &'static LaunchShared) {
    with_thread(|t| {
        // SAFETY: both outlive every emulated thread of the launch (scoped threads).
        unsafe { (*t, &*t.block, &*t.launch) }
    })
}

/// What a detected divergence says.
fn describe(op: &str, scope: &str, why: Detected) -> String {
    match why {
        Detected::Exited(arrived, exited) => {
            format!("{op} reached by {arrived} {scope} while {exited} had returned (every one must reach it)")
        }
        Detected::Sites(a, b) => format!(
            "divergent {op}: {scope} wait at {a} while another arrives at {b} (every one must reach the same one)"
        ),
    }
}

pub(crate) fn sync_threads(site: Site) {
    let (t, block, launch) = current();
    match block.barrier.arrive(site) {
        Ok(()) => EPOCH.with(|e| e.set(e.get() + 1)),
        Err(Some(why)) => {
            launch.record(EmuError::Divergence {
                kernel: launch.kernel,
                block: t.block_idx,
                what: describe("sync_threads", "threads", why),
            });
            abort()
        }
        Err(None) => abort(),
    }
}

fn warp_sync(op: &str, site: Site) -> (&'static Warp, usize) {
    let (t, block, launch) = current();
    let warp = &block.warps[(t.linear / 32) as usize];
    if warp.lanes != 32 {
        fault(format!("{op} in a partial warp of {} lanes (blocks must be a multiple of 32 threads)", warp.lanes));
    }
    match warp.rendezvous.arrive(site) {
        Ok(()) => (warp, (t.linear % 32) as usize),
        Err(Some(why)) => {
            launch.record(EmuError::Divergence {
                kernel: launch.kernel,
                block: t.block_idx,
                what: format!("warp {}: {} (full-warp mask)", t.linear / 32, describe(op, "lanes", why)),
            });
            abort()
        }
        Err(None) => abort(),
    }
}

fn publish(slot: usize, v: u32) {
    let (t, block, _) = current();
    let warp = &block.warps[(t.linear / 32) as usize];
    warp.slots[(t.linear % 32) as usize * SLOTS_PER_LANE + slot].store(v, Ordering::Relaxed);
}

pub(crate) fn shuffle(v: u32, src_lane: impl Fn(u32) -> Option<u32>, site: Site) -> u32 {
    publish(0, v);
    let (warp, lane) = warp_sync("shuffle", site);
    let r = match src_lane(lane as u32) {
        Some(s) => warp.slots[s as usize * SLOTS_PER_LANE].load(Ordering::Relaxed),
        None => v,
    };
    warp_sync("shuffle", site);
    r
}

pub(crate) fn mma_m16n8k32_s8(a: [u32; 4], b: [u32; 2], c: [i32; 4], site: Site) -> [i32; 4] {
    for (i, v) in a.iter().enumerate() {
        publish(i, *v);
    }
    publish(4, b[0]);
    publish(5, b[1]);
    let (warp, lane) = warp_sync("mma.m16n8k32", site);
    let slot = |lane: usize, s: usize| warp.slots[lane * SLOTS_PER_LANE + s].load(Ordering::Relaxed);
    let byte = |word: u32, k: usize| (word >> (8 * (k % 4))) as u8 as i8 as i32;
    // A[row][k] lives in lane (row%8)*4 + (k%16)/4, register (row>=8) + 2*(k>=16).
    let a_at = |row: usize, k: usize| byte(slot((row % 8) * 4 + (k % 16) / 4, (row / 8) + 2 * (k / 16)), k);
    // B[k][col] lives in lane col*4 + (k%16)/4, register (k>=16).
    let b_at = |k: usize, col: usize| byte(slot(col * 4 + (k % 16) / 4, 4 + k / 16), k);
    let (g, t) = (lane / 4, lane % 4);
    let mut d = c;
    for (i, acc) in d.iter_mut().enumerate() {
        let row = g + 8 * (i / 2);
        let col = 2 * t + (i % 2);
        for k in 0..32 {
            *acc = acc.wrapping_add(a_at(row, k) * b_at(k, col));
        }
    }
    warp_sync("mma.m16n8k32", site);
    d
}

/// A bounds-checked pointer to element `index` of the block's dynamic shared memory.
/// Whether a typed shared-memory access reads or writes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// A bounds- and race-checked pointer to element `index` of the block's
/// dynamic shared memory.
///
/// The race check covers the typed accesses of [`crate::device`] (not raw
/// pointers from `dynamic_shared`): a read of a word that another thread
/// wrote since the last barrier, or two threads writing one word between
/// barriers, is a fault (on a GPU the result depends on timing).
pub(crate) fn shared_element<T>(index: u32, access: Access) -> *mut T {
    let (t, block, launch) = current();
    let size = std::mem::size_of::<T>();
    let end = (index as usize + 1) * size;
    if end > launch.shared_bytes {
        fault(format!(
            "shared memory access of element {index} ({size}-byte elements) past the {} bytes the launch asked for",
            launch.shared_bytes
        ));
    }
    let me = t.linear as u64 + 1;
    let tag = ((EPOCH.with(Cell::get) + 1) << 20) | me;
    for word in index as usize * size / 4..end.div_ceil(4) {
        let seen = match access {
            Access::Read => block.shadow[word].load(Ordering::Relaxed),
            Access::Write => block.shadow[word].swap(tag, Ordering::Relaxed),
        };
        if seen >> 20 == tag >> 20 && seen & 0xf_ffff != me {
            let what = if access == Access::Read { "reads" } else { "writes" };
            fault(format!(
                "shared-memory race: thread {} {what} byte {} written by thread {} since the last barrier",
                t.linear,
                4 * word,
                (seen & 0xf_ffff) - 1
            ));
        }
    }
    // SAFETY: in bounds of the block's shared allocation (checked above).
    unsafe { block.shared.add(index as usize * size).cast() }
}

pub(crate) fn clock64() -> u64 {
    let (_, _, launch) = current();
    launch.start.elapsed().as_nanos() as u64
}

fn validate(kernel: &'static str, cfg: &LaunchConfig) -> Result<(), EmuError> {
    let invalid = |reason: String| Err(EmuError::InvalidLaunch { kernel, reason });
    if cfg.grid.contains(&0) || cfg.block.contains(&0) {
        return invalid(format!("zero-sized grid {:?} or block {:?}", cfg.grid, cfg.block));
    }
    let threads: u64 = cfg.block.iter().map(|&d| d as u64).product();
    if threads > MAX_THREADS_PER_BLOCK as u64 {
        return invalid(format!("{threads} threads per block (max {MAX_THREADS_PER_BLOCK})"));
    }
    if cfg.shared_bytes > MAX_SHARED_BYTES {
        return invalid(format!("{} bytes of shared memory (max {MAX_SHARED_BYTES})", cfg.shared_bytes));
    }
    Ok(())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

/// Runs `body` once per GPU thread of the grid described by `config`.
///
/// This is what the `launch` function generated by [`crate::kernel!`] calls.
pub fn launch<F: Fn() + Sync>(kernel: &'static str, config: LaunchConfig, body: F) -> Result<(), EmuError> {
    validate(kernel, &config)?;
    let threads = config.block.iter().product::<u32>() as usize;
    let [gx, gy, gz] = config.grid;
    let blocks = gx as u64 * gy as u64 * gz as u64;
    let block = BlockState::new(threads, config.shared_bytes as usize);
    let shared = LaunchShared {
        kernel,
        shared_bytes: config.shared_bytes as usize,
        error: Mutex::new(None),
        stop: AtomicBool::new(false),
        start: Instant::now(),
    };
    let gate = Barrier::new(threads);
    let [bx, by, _] = config.block;

    std::thread::scope(|scope| {
        for linear in 0..threads as u32 {
            let (block, shared, gate, body) = (&block, &shared, &gate, &body);
            let run = move || {
                let thread_idx = [linear % bx, (linear / bx) % by, linear / (bx * by)];
                for b in 0..blocks {
                    if gate.wait().is_leader() {
                        block.reset();
                        shared.stop.store(lock(&shared.error).is_some(), Ordering::SeqCst);
                    }
                    gate.wait();
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let block_idx = [
                        (b % gx as u64) as u32,
                        ((b / gx as u64) % gy as u64) as u32,
                        (b / (gx as u64 * gy as u64)) as u32,
                    ];
                    CTX.with(|c| {
                        c.set(Some(ThreadCtx {
                            thread_idx,
                            block_idx,
                            block_dim: config.block,
                            grid_dim: config.grid,
                            shared: block.shared,
                            linear,
                            block: block as *const BlockState,
                            launch: shared as *const LaunchShared,
                        }))
                    });
                    EPOCH.with(|e| e.set(0));
                    let outcome = catch_unwind(AssertUnwindSafe(body));
                    if let Err(p) = outcome
                        && !p.is::<Aborted>()
                    {
                        let message = match p.downcast_ref::<FaultPayload>() {
                            Some(FaultPayload(m)) => m.clone(),
                            None => format!("panicked: {}", panic_message(&*p)),
                        };
                        shared.record(EmuError::Fault { kernel, block: block_idx, thread: thread_idx, message });
                    }
                    let divergence = |what: String| EmuError::Divergence { kernel, block: block_idx, what };
                    if let Some((arrived, exited)) = block.barrier.exit() {
                        shared.record(divergence(format!(
                            "sync_threads reached by {arrived} threads while {exited} had returned (a barrier every thread must reach)"
                        )));
                    }
                    let warp = linear as usize / 32;
                    if let Some((arrived, exited)) = block.warps[warp].rendezvous.exit() {
                        shared.record(divergence(format!(
                            "a warp collective in warp {warp} reached by {arrived} lanes while {exited} had returned (full-warp mask)"
                        )));
                    }
                    CTX.with(|c| c.set(None));
                }
            };
            std::thread::Builder::new()
                .name(format!("emu-{kernel}-{linear}"))
                .stack_size(1 << 20)
                .spawn_scoped(scope, run)
                .expect("spawning an emulator thread");
        }
    });
    match shared.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
