//! The SIMT emulator's semantics, through small test kernels.

use kernels_gpu::device::*;
use kernels_gpu::emu::{EmuError, LaunchConfig, SHARED_POISON};
use kernels_gpu::kernel;

kernel! {
    /// Thread 0 returns before a barrier the others wait at.
    pub unsafe fn early_return_before_barrier(out: Out<u32>) {
        if thread_idx_x() == 0 {
            return;
        }
        sync_threads();
        out.set(thread_idx_x() as usize, 1);
    }
}

kernel! {
    /// Even and odd warps wait at two different barriers: undefined behaviour on a GPU.
    pub unsafe fn divergent_barriers(out: Out<u32>) {
        if warp_id().is_multiple_of(2) {
            sync_threads();
            out.set(thread_idx_x() as usize, 1);
        } else {
            out.set(thread_idx_x() as usize, 2);
            sync_threads();
        }
    }
}

kernel! {
    /// Lanes of one warp meet at two different shuffles.
    pub unsafe fn divergent_shuffles(out: Out<u32>) {
        let v = if lane_id() < 16 { shfl_xor(1, 1) } else { shfl_xor(2, 1) };
        out.set(thread_idx_x() as usize, v);
    }
}

kernel! {
    /// Writes one element per thread with no bounds guard.
    pub unsafe fn unguarded_write(out: Out<u32>) {
        let i = global_thread_x() as usize;
        out.set(i, i as u32);
    }
}

kernel! {
    /// Neighbour exchange through shared memory across a barrier.
    pub unsafe fn rotate_through_shared(out: Out<u32>) {
        let smem = dynamic_shared::<u32>();
        let t = thread_idx_x();
        let n = block_dim_x();
        *smem.add(t as usize) = t * 10 + block_idx_x();
        sync_threads();
        out.set((block_idx_x() * n + t) as usize, *smem.add(((t + 1) % n) as usize));
    }
}

kernel! {
    /// Reads shared memory nobody wrote.
    pub unsafe fn read_unwritten_shared(out: Out<u32>) {
        out.set(thread_idx_x() as usize, *dynamic_shared::<u32>().add(thread_idx_x() as usize));
    }
}

kernel! {
    /// Each lane records the results of the three shuffles and a warp sum.
    pub unsafe fn shuffles(out: Out<u32>) {
        let t = linear_thread_idx();
        let lane = lane_id();
        let v = 1000 + t;
        let base = 4 * t as usize;
        out.set(base, shfl_xor(v, 5));
        out.set(base + 1, shfl_down(v, 3));
        out.set(base + 2, shfl_idx(v, 7));
        out.set(base + 3, warp_sum_i32(lane as i32) as u32);
    }
}

kernel! {
    /// One warp: loads A (16×32, row-major) and B (32×8, column-major) into
    /// the documented fragments, runs mma with C = 1, stores D (16×8 row-major).
    pub unsafe fn mma_tile(a: In<i8>, b: In<i8>, d: Out<i32>) {
        let lane = lane_id() as usize;
        let (g, t) = (lane / 4, lane % 4);
        let a_word = |row: usize, col: usize| {
            pack_i8x4([a.get(row * 32 + col), a.get(row * 32 + col + 1), a.get(row * 32 + col + 2), a.get(row * 32 + col + 3)])
        };
        // B column-major: element (k, n) at n * 32 + k.
        let b_word = |k: usize, n: usize| {
            pack_i8x4([b.get(n * 32 + k), b.get(n * 32 + k + 1), b.get(n * 32 + k + 2), b.get(n * 32 + k + 3)])
        };
        let fa = [a_word(g, 4 * t), a_word(g + 8, 4 * t), a_word(g, 16 + 4 * t), a_word(g + 8, 16 + 4 * t)];
        let fb = [b_word(4 * t, g), b_word(16 + 4 * t, g)];
        let r = mma_m16n8k32_s8(fa, fb, [1; 4]);
        d.set(g * 8 + 2 * t, r[0]);
        d.set(g * 8 + 2 * t + 1, r[1]);
        d.set((g + 8) * 8 + 2 * t, r[2]);
        d.set((g + 8) * 8 + 2 * t + 1, r[3]);
    }
}

kernel! {
    /// Records its block and thread indices in a 2-D grid of 2-D blocks.
    pub unsafe fn indices(out: Out<u32>) {
        let bx = block_idx_x() + block_idx_y() * grid_dim_x();
        let t = thread_idx_x() + thread_idx_y() * block_dim_x();
        let i = (bx * block_dim_x() * block_dim_y() + t) as usize;
        out.set(i, block_idx_y() << 24 | block_idx_x() << 16 | thread_idx_y() << 8 | thread_idx_x());
    }
}

kernel! {
    /// Typed shared-memory round trip, one element past the end for the last thread.
    pub unsafe fn shared_words(out: Out<u64>, words: u32) {
        let t = thread_idx_x();
        shared_store_u64(t, t as u64 * 3);
        sync_threads();
        out.set(t as usize, shared_load_u64((t + 1) % words));
    }
}

kernel! {
    /// Writes its own shared word and reads its neighbour's, with or without a barrier between.
    pub unsafe fn neighbour_exchange(out: Out<u32>, barrier: u32) {
        let t = thread_idx_x();
        shared_store_u32(t, t + 100);
        if barrier != 0 {
            sync_threads();
        }
        out.set(t as usize, shared_load_u32((t + 1) % block_dim_x()));
    }
}

#[test]
fn a_shared_memory_race_is_reported() {
    let mut out = vec![0u32; 64];
    // SAFETY: the view covers a live buffer.
    unsafe { neighbour_exchange::launch(LaunchConfig::linear(1, 64, 256), Out::from_slice(&mut out), 1) }.unwrap();
    assert!(out.iter().enumerate().all(|(t, &v)| v == (t as u32 + 1) % 64 + 100));
    // Without the barrier, whether a thread sees its neighbour's value depends on timing.
    // SAFETY: as above.
    let err = unsafe { neighbour_exchange::launch(LaunchConfig::linear(1, 64, 256), Out::from_slice(&mut out), 0) }
        .unwrap_err();
    assert!(err.to_string().contains("shared-memory race"), "{err}");
    assert!(err.to_string().contains("neighbour_exchange"), "{err}");
}

#[test]
fn typed_shared_memory_is_bounds_checked() {
    let mut out = vec![0u64; 32];
    // 32 threads, 32 words: every access in bounds.
    // SAFETY: the view covers a live buffer.
    unsafe { shared_words::launch(LaunchConfig::linear(1, 32, 32 * 8), Out::from_slice(&mut out), 32) }.unwrap();
    assert!(out.iter().enumerate().all(|(t, &v)| v == ((t as u64 + 1) % 32) * 3));
    // 31 words of shared memory: thread 31's store is past the end.
    // SAFETY: as above.
    let err = unsafe { shared_words::launch(LaunchConfig::linear(1, 32, 31 * 8), Out::from_slice(&mut out), 31) }
        .unwrap_err();
    assert!(err.to_string().contains("shared memory access of element 31"), "{err}");
}

#[test]
fn threads_at_two_different_barriers_are_a_reported_divergence() {
    let mut out = vec![0u32; 64];
    // SAFETY: the view covers 64 elements, one per thread.
    let err =
        unsafe { divergent_barriers::launch(LaunchConfig::linear(1, 64, 0), Out::from_slice(&mut out)) }.unwrap_err();
    match err {
        EmuError::Divergence { kernel, what, .. } => {
            assert_eq!(kernel, "divergent_barriers");
            assert!(what.contains("divergent sync_threads") && what.contains("emulator.rs"), "{what}");
        }
        other => panic!("expected a divergence, got {other:?}"),
    }
    let mut out = vec![0u32; 32];
    // SAFETY: as above.
    let err =
        unsafe { divergent_shuffles::launch(LaunchConfig::linear(1, 32, 0), Out::from_slice(&mut out)) }.unwrap_err();
    assert!(err.to_string().contains("divergent shuffle"), "{err}");
}

#[test]
fn a_barrier_skipped_by_one_thread_is_a_reported_divergence() {
    let mut out = vec![0u32; 64];
    // SAFETY: the view covers a live buffer.
    let err = unsafe { early_return_before_barrier::launch(LaunchConfig::linear(1, 64, 0), Out::from_slice(&mut out)) }
        .unwrap_err();
    match &err {
        EmuError::Divergence { kernel, what, .. } => {
            assert_eq!(*kernel, "early_return_before_barrier");
            assert!(what.contains("63 threads") && what.contains("1 had returned"), "{what}");
        }
        other => panic!("expected a divergence, got {other:?}"),
    }
    assert!(err.to_string().contains("early_return_before_barrier"));
}

#[test]
fn an_out_of_bounds_write_is_a_fault_naming_the_kernel() {
    let mut out = vec![0u32; 100];
    // SAFETY: the view covers a live buffer (the kernel overruns it on purpose).
    let err =
        unsafe { unguarded_write::launch(LaunchConfig::linear(1, 128, 0), Out::from_slice(&mut out)) }.unwrap_err();
    match err {
        EmuError::Fault { kernel, message, thread, .. } => {
            assert_eq!(kernel, "unguarded_write");
            assert!(message.contains("out of bounds of a 100-element buffer"), "{message}");
            assert!(thread[0] >= 100);
        }
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[test]
fn barriers_order_shared_memory_in_every_block() {
    let (blocks, threads) = (3u32, 96u32);
    let mut out = vec![0u32; (blocks * threads) as usize];
    // SAFETY: as above.
    unsafe {
        rotate_through_shared::launch(LaunchConfig::linear(blocks, threads, threads * 4), Out::from_slice(&mut out))
    }
    .unwrap();
    for b in 0..blocks {
        for t in 0..threads {
            assert_eq!(out[(b * threads + t) as usize], ((t + 1) % threads) * 10 + b);
        }
    }
}

#[test]
fn shared_memory_starts_poisoned() {
    let mut out = vec![0u32; 32];
    // SAFETY: as above.
    unsafe { read_unwritten_shared::launch(LaunchConfig::linear(2, 32, 128), Out::from_slice(&mut out)) }.unwrap();
    assert!(out.iter().all(|&v| v == u32::from_ne_bytes([SHARED_POISON; 4])));
}

#[test]
fn shuffles_follow_the_ptx_definitions() {
    let threads = 64u32;
    let mut out = vec![0u32; 4 * threads as usize];
    // SAFETY: as above.
    unsafe { shuffles::launch(LaunchConfig::linear(1, threads, 0), Out::from_slice(&mut out)) }.unwrap();
    for t in 0..threads {
        let (warp, lane) = (t / 32 * 32, t % 32);
        let r = &out[4 * t as usize..4 * t as usize + 4];
        assert_eq!(r[0], 1000 + warp + (lane ^ 5), "xor at {t}");
        let down = if lane + 3 < 32 { lane + 3 } else { lane };
        assert_eq!(r[1], 1000 + warp + down, "down at {t}");
        assert_eq!(r[2], 1000 + warp + 7, "idx at {t}");
        assert_eq!(r[3], (0..32).sum::<u32>(), "sum at {t}");
    }
}

#[test]
fn shuffles_in_a_partial_warp_are_a_fault() {
    let mut out = vec![0u32; 4 * 40];
    // SAFETY: as above.
    let err = unsafe { shuffles::launch(LaunchConfig::linear(1, 40, 0), Out::from_slice(&mut out)) }.unwrap_err();
    assert!(err.to_string().contains("partial warp of 8 lanes"), "{err}");
}

#[test]
fn mma_m16n8k32_matches_a_plain_matrix_product() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let a: Vec<i8> = (0..16 * 32).map(|_| rng.random()).collect();
    let b: Vec<i8> = (0..32 * 8).map(|_| rng.random()).collect(); // column-major
    let mut d = vec![0i32; 16 * 8];
    // SAFETY: as above.
    unsafe {
        mma_tile::launch(
            LaunchConfig::linear(1, 32, 0),
            In::from_slice(&a),
            In::from_slice(&b),
            Out::from_slice(&mut d),
        )
    }
    .unwrap();
    for m in 0..16 {
        for n in 0..8 {
            let want: i32 = 1 + (0..32).map(|k| a[m * 32 + k] as i32 * b[n * 32 + k] as i32).sum::<i32>();
            assert_eq!(d[m * 8 + n], want, "D[{m}][{n}]");
        }
    }
}

#[test]
fn two_dimensional_grids_and_blocks_index_like_cuda() {
    let cfg = LaunchConfig { grid: [3, 2, 1], block: [4, 2, 1], shared_bytes: 0 };
    let mut out = vec![0u32; 48];
    // SAFETY: as above.
    unsafe { indices::launch(cfg, Out::from_slice(&mut out)) }.unwrap();
    let mut want = Vec::new();
    for by in 0..2u32 {
        for bx in 0..3u32 {
            for ty in 0..2u32 {
                for tx in 0..4u32 {
                    want.push(by << 24 | bx << 16 | ty << 8 | tx);
                }
            }
        }
    }
    assert_eq!(out, want);
}

#[test]
fn invalid_launches_are_refused() {
    let mut out = vec![0u32; 1];
    // SAFETY: nothing runs.
    let err =
        unsafe { unguarded_write::launch(LaunchConfig::linear(1, 2048, 0), Out::from_slice(&mut out)) }.unwrap_err();
    assert!(matches!(err, EmuError::InvalidLaunch { .. }), "{err:?}");
    // SAFETY: nothing runs.
    let err =
        unsafe { unguarded_write::launch(LaunchConfig::linear(0, 32, 0), Out::from_slice(&mut out)) }.unwrap_err();
    assert!(err.to_string().contains("zero-sized"), "{err}");
}

#[test]
fn dp4a_reference_is_a_signed_byte_dot_product() {
    let a = pack_i8x4([-128, 127, -1, 5]);
    let b = pack_i8x4([-128, -128, 7, 3]);
    assert_eq!(dp4a_reference(a, b, 10), 10 + 16384 - 16256 - 7 + 15);
}

#[test]
fn software_half_conversions_match_the_half_crate() {
    use rand::{RngExt, SeedableRng};
    for bits in 0..=u16::MAX {
        let want = half::f16::from_bits(bits).to_f32();
        let got = f16_to_f32_soft(bits);
        assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{bits:#x}");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let specials =
        [0.0f32, -0.0, 1.0, 65504.0, 65520.0, 6.1e-5, 5.96e-8, 2.98e-8, 1e-10, f32::INFINITY, 0.1, 1.0 / 3.0];
    let randoms = (0..200_000).map(|_| f32::from_bits(rng.random::<u32>()));
    for v in specials.into_iter().chain(randoms) {
        let want = half::f16::from_f32(v);
        let got = f32_to_f16_soft(v);
        assert!(
            got == want.to_bits() || (want.is_nan() && half::f16::from_bits(got).is_nan()),
            "{v:e}: {got:#x} vs {:#x}",
            want.to_bits()
        );
    }
}
