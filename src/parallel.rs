//! Many processes: a small communicator over which the VMC and the classical sampler split
//! their work, with a single-process implementation (the default build) and an MPI one
//! (feature `mpi`, `mpirun -n K rgdiff ...`).
//!
//! **Results do not depend on the number of ranks.** Work is cut into a fixed number of
//! *chunks* (samples of a VMC batch, independent chains of a sampler), a number stored in the
//! run's configuration. Chunk `c` of iteration `t` draws from its own generator
//! ([`chunk_rng`], a function of the seed, `t` and `c` only); ranks own contiguous ranges of
//! chunks ([`Chunks::of_rank`]), compute per-chunk results, and every rank gathers all
//! chunks' results in chunk order ([`gather_chunks`]) and reduces them in that order. So a
//! run with `C` chunks gives the same numbers on 1, 2, ... `C` ranks, up to the rounding of
//! matrix products whose threading differs; with one chunk a run is exactly the historical
//! single-process run.
//!
//! Collectives are gathers (not MPI's reductions, whose summation order is unspecified);
//! every rank then holds the same data and applies the same update. Time spent inside
//! collectives (including waiting for slower ranks) is accumulated in
//! [`Communicator::comm_seconds`]; the part spent waiting for the slowest rank (the exchange
//! of buffer sizes that opens every gather, a synchronisation point) in
//! [`Communicator::wait_seconds`].

use std::ops::Range;
use std::sync::Arc;

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::error::{Error, Result};

/// The collectives rgdiff needs. Every rank must call the same collectives in the same order.
pub trait Communicator: Send + Sync {
    /// This process's index, `0 .. size`.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn size(&self) -> usize;
    /// Index of this process among those on its node (for choosing a GPU).
    fn local_rank(&self) -> usize;
    /// Processes on this node.
    fn local_size(&self) -> usize;
    /// Every rank's buffer (lengths may differ), in rank order, on every rank.
    fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>>;
    /// Waits for every rank.
    fn barrier(&self);
    /// Ends every process of the job with exit status `code` (MPI_Abort).
    fn abort(&self, code: i32) -> !;
    /// Seconds spent in collectives so far (wall time, including waiting for other ranks).
    fn comm_seconds(&self) -> f64;
    /// The part of [`Communicator::comm_seconds`] spent waiting for the slowest rank to arrive
    /// (the rest moved data).
    fn wait_seconds(&self) -> f64 {
        0.0
    }
}

/// One process: gathers return the local buffer; nothing is ever communicated.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn local_size(&self) -> usize {
        1
    }
    fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>> {
        vec![local.to_vec()]
    }
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn comm_seconds(&self) -> f64 {
        0.0
    }
}

/// The single-process communicator as the shared handle the drivers hold.
pub fn single() -> Arc<dyn Communicator> {
    Arc::new(SingleProcess)
}

/// The communicator of this process: with feature `mpi`, MPI's world (initialising MPI; a
/// program started without `mpirun` is a world of one), otherwise [`SingleProcess`]. With
/// more than one rank a panic on any rank aborts the whole job (so that the other ranks do
/// not wait forever in a collective).
pub fn world() -> Result<Arc<dyn Communicator>> {
    #[cfg(feature = "mpi")]
    {
        let c = mpi_impl::MpiCommunicator::init()?;
        Ok(Arc::new(c))
    }
    #[cfg(not(feature = "mpi"))]
    {
        Ok(single())
    }
}

/// Whether this binary was built with MPI support.
pub const WITH_MPI: bool = cfg!(feature = "mpi");

/// Every rank's `f64` slice, in rank order.
pub fn all_gather_f64(comm: &dyn Communicator, local: &[f64]) -> Vec<Vec<f64>> {
    if comm.size() == 1 {
        return vec![local.to_vec()];
    }
    let bytes: Vec<u8> = local.iter().flat_map(|v| v.to_le_bytes()).collect();
    comm.all_gather_bytes(&bytes)
        .into_iter()
        .map(|b| {
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        })
        .collect()
}

/// Every rank's `f32` slice, in rank order.
pub fn all_gather_f32(comm: &dyn Communicator, local: &[f32]) -> Vec<Vec<f32>> {
    if comm.size() == 1 {
        return vec![local.to_vec()];
    }
    let bytes: Vec<u8> = local.iter().flat_map(|v| v.to_le_bytes()).collect();
    comm.all_gather_bytes(&bytes)
        .into_iter()
        .map(|b| {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect()
        })
        .collect()
}

/// Concatenation of every rank's `f64` slice in rank order: with contiguous chunk ownership
/// ([`Chunks::of_rank`]), the per-chunk data of all chunks in chunk order.
pub fn gather_chunks(comm: &dyn Communicator, local: Vec<f64>) -> Vec<f64> {
    if comm.size() == 1 {
        return local;
    }
    all_gather_f64(comm, &local).concat()
}

/// Whether `flag` is set on any rank (so that every rank stops at the same iteration when
/// an interrupt reaches the ranks at different times).
pub fn any(comm: &dyn Communicator, flag: bool) -> bool {
    if comm.size() == 1 {
        return flag;
    }
    comm.all_gather_bytes(&[u8::from(flag)])
        .iter()
        .any(|b| b.first() == Some(&1))
}

/// Checks that `value` (a checksum of state every rank should hold identically) is the same
/// on every rank; names the first rank that differs from rank 0.
pub fn check_same(comm: &dyn Communicator, value: u64, what: &str) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let all = comm.all_gather_bytes(&value.to_le_bytes());
    let vals: Vec<u64> = all
        .iter()
        .map(|b| u64::from_le_bytes(b[..8].try_into().expect("8 bytes")))
        .collect();
    if let Some(r) = vals.iter().position(|&v| v != vals[0]) {
        return Err(Error::Parallel(format!(
            "{what} of rank {r} (checksum {:016x}) differs from rank 0 ({:016x}); the ranks no \
             longer hold the same state (different builds, devices or input files per rank?)",
            vals[r], vals[0]
        )));
    }
    Ok(())
}

/// FNV-1a over the bit patterns of `values`: equal exactly when the bits are equal.
pub fn checksum_f32(values: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The generator of chunk `chunk` of iteration `iter`: a function of these and the seed
/// only (not of the rank count). Chunk 0 is the historical single-stream generator
/// `Vmc::rng_for(seed, iter)`, so a run with one chunk draws what it always drew.
pub fn chunk_rng(seed: u64, iter: usize, chunk: usize) -> Xoshiro256PlusPlus {
    let s = if chunk == 0 {
        seed
    } else {
        // SplitMix64 of the chunk index, so neighbouring chunks get unrelated seeds.
        let mut z = (chunk as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        seed ^ z ^ (z >> 31)
    };
    Xoshiro256PlusPlus::seed_from_u64(
        s.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (iter as u64).wrapping_add(1),
    )
}

/// Shares this process's threads between its `chunks` chunks of a CPU run and the tensor
/// operations inside each, and returns the rayon pool's size: the chunks run in parallel on
/// the global rayon pool of `RAYON_NUM_THREADS` threads (default: the available cores), and
/// candle, which takes its own thread count from `RAYON_NUM_THREADS` at every operation, gets
/// `threads / chunks` of them (at least 1). Small networks use two cores far better as two
/// chunks with single-threaded operations than as one chunk with two-threaded ones (whose
/// threads wait at candle's barriers between small operations). With one chunk nothing is
/// changed. Call before any tensor operation or other use of rayon.
pub fn share_threads(chunks: usize) -> usize {
    if chunks < 2 {
        return rayon::current_num_threads();
    }
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let per_op = (threads / chunks.min(threads)).max(1);
    std::env::set_var("RAYON_NUM_THREADS", per_op.to_string());
    // Fails only if the pool exists already, which then keeps its size.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    rayon::current_num_threads()
}

/// A split of `total` items into `n` chunks of nearly equal size (the first `total % n`
/// chunks one larger), owned by ranks in contiguous ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunks {
    pub total: usize,
    pub n: usize,
}

impl Chunks {
    /// `what` names the option for the error message (`--chunks`, `--chains`).
    pub fn new(total: usize, n: usize, ranks: usize, what: &str) -> Result<Self> {
        if n == 0 || n > total {
            return Err(Error::Input(format!(
                "{what} {n}: expected between 1 and the {total} samples it splits"
            )));
        }
        if n < ranks {
            return Err(Error::Input(format!(
                "{what} {n} is fewer than the {ranks} MPI ranks: every rank needs at least one; \
                 give {what} at least {ranks} (keep it the same to reproduce a run on another \
                 number of ranks)"
            )));
        }
        Ok(Chunks { total, n })
    }

    /// Items of chunk `c`.
    pub fn range(&self, c: usize) -> Range<usize> {
        let (q, r) = (self.total / self.n, self.total % self.n);
        let start = c * q + c.min(r);
        start..start + q + usize::from(c < r)
    }

    /// Chunks of rank `rank` out of `size`.
    pub fn of_rank(&self, rank: usize, size: usize) -> Range<usize> {
        (rank * self.n / size)..((rank + 1) * self.n / size)
    }

    /// Items of the chunks of rank `rank` (contiguous).
    pub fn items_of_rank(&self, rank: usize, size: usize) -> Range<usize> {
        let c = self.of_rank(rank, size);
        if c.is_empty() {
            return 0..0;
        }
        self.range(c.start).start..self.range(c.end - 1).end
    }
}

/// The device of this rank: with several ranks on a node, `cuda` means one GPU per local rank
/// (`cuda:(local rank mod GPUs)`, GPUs counted from `CUDA_VISIBLE_DEVICES` when set, else one
/// per local rank); `cpu` and an explicit `cuda:N` are kept.
pub fn rank_device(name: &str, comm: &dyn Communicator) -> String {
    let gpus = std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .map(|v| v.split(',').filter(|s| !s.trim().is_empty()).count())
        .filter(|&n| n > 0)
        .unwrap_or(comm.local_size());
    device_for(name, comm.local_rank(), gpus)
}

/// [`rank_device`] for a given local rank and GPU count.
pub fn device_for(name: &str, local_rank: usize, gpus: usize) -> String {
    if name == "cuda" && gpus > 0 {
        format!("cuda:{}", local_rank % gpus)
    } else {
        name.to_string()
    }
}

/// Test hook: when the environment variable `RGDIFF_TEST_PANIC_RANK` equals this rank,
/// panics at iteration `RGDIFF_TEST_PANIC_ITER` (default 1) of a driver loop. Used by the MPI
/// tests to check that a dying rank ends the job instead of leaving the others waiting.
pub fn test_fault(comm: &dyn Communicator, iter: usize) {
    let Ok(r) = std::env::var("RGDIFF_TEST_PANIC_RANK") else {
        return;
    };
    let at: usize = std::env::var("RGDIFF_TEST_PANIC_ITER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    if r.parse::<usize>().ok() == Some(comm.rank()) && iter == at {
        panic!(
            "injected failure on rank {} at iteration {iter} (RGDIFF_TEST_PANIC_RANK)",
            comm.rank()
        );
    }
}

#[cfg(feature = "mpi")]
mod mpi_impl {
    use super::{Communicator, Error, Result};
    use mpi::datatype::PartitionMut;
    use mpi::environment::Universe;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::{Communicator as _, CommunicatorCollectives as _};
    use mpi::Count;
    use std::sync::Mutex;
    use std::time::Instant;

    /// MPI's world communicator. Owns the MPI environment (finalised on drop).
    pub struct MpiCommunicator {
        world: SimpleCommunicator,
        rank: usize,
        size: usize,
        local_rank: usize,
        local_size: usize,
        /// (in collectives, of which waiting for the slowest rank)
        seconds: Mutex<(f64, f64)>,
        // Dropped last: MPI_Finalize.
        _universe: Universe,
    }

    // SAFETY: MPI is initialised with `Threading::Serialized` and rgdiff calls collectives
    // from one thread at a time (the driver's); the handles are plain MPI_Comm values.
    unsafe impl Send for MpiCommunicator {}
    unsafe impl Sync for MpiCommunicator {}

    impl MpiCommunicator {
        pub fn init() -> Result<Self> {
            let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Serialized)
                .ok_or_else(|| {
                    Error::Parallel("MPI was already initialised in this process".into())
                })?;
            let world = universe.world();
            let rank = world.rank() as usize;
            let size = world.size() as usize;
            let node = world.split_shared(world.rank());
            let (local_rank, local_size) = (node.rank() as usize, node.size() as usize);
            if size > 1 {
                let default = std::panic::take_hook();
                std::panic::set_hook(Box::new(move |info| {
                    default(info);
                    eprintln!("rgdiff: rank {rank} panicked; aborting all {size} ranks");
                    SimpleCommunicator::world().abort(101);
                }));
            }
            Ok(MpiCommunicator {
                world,
                rank,
                size,
                local_rank,
                local_size,
                seconds: Mutex::new((0.0, 0.0)),
                _universe: universe,
            })
        }

        /// Runs a collective, adding its time to the total and `wait` (seconds of it spent
        /// waiting, reported by `f`) to the waiting time.
        fn timed<T>(&self, f: impl FnOnce() -> (T, f64)) -> T {
            let t = Instant::now();
            let (out, wait) = f();
            let mut s = self.seconds.lock().expect("timer");
            s.0 += t.elapsed().as_secs_f64();
            s.1 += wait;
            out
        }
    }

    impl Communicator for MpiCommunicator {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn local_rank(&self) -> usize {
            self.local_rank
        }
        fn local_size(&self) -> usize {
            self.local_size
        }
        fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>> {
            self.timed(|| {
                let n = Count::try_from(local.len()).expect("a gathered buffer under 2 GiB");
                let mut counts = vec![0 as Count; self.size];
                // Completes only when every rank has arrived: its time is the waiting.
                let t = Instant::now();
                self.world.all_gather_into(&n, &mut counts[..]);
                let wait = t.elapsed().as_secs_f64();
                let displs: Vec<Count> = counts
                    .iter()
                    .scan(0 as Count, |acc, &c| {
                        let d = *acc;
                        *acc += c;
                        Some(d)
                    })
                    .collect();
                let total: usize = counts.iter().map(|&c| c as usize).sum();
                let mut buf = vec![0u8; total];
                {
                    let mut part = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
                    self.world.all_gather_varcount_into(local, &mut part);
                }
                let parts = counts
                    .iter()
                    .zip(&displs)
                    .map(|(&c, &d)| buf[d as usize..(d + c) as usize].to_vec())
                    .collect();
                (parts, wait)
            })
        }
        fn barrier(&self) {
            self.timed(|| {
                let t = Instant::now();
                self.world.barrier();
                ((), t.elapsed().as_secs_f64())
            })
        }
        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
        fn comm_seconds(&self) -> f64 {
            self.seconds.lock().expect("timer").0
        }
        fn wait_seconds(&self) -> f64 {
            self.seconds.lock().expect("timer").1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn chunks_cover_the_items_once_and_ranks_own_contiguous_ranges() {
        for (total, n) in [(10, 3), (1024, 8), (7, 7), (5, 1)] {
            let ch = Chunks::new(total, n, 1, "--chunks").unwrap();
            let mut next = 0;
            for c in 0..n {
                let r = ch.range(c);
                assert_eq!(r.start, next);
                assert!(!r.is_empty());
                next = r.end;
            }
            assert_eq!(next, total);
            for size in 1..=n {
                let mut next = 0;
                for rank in 0..size {
                    let items = ch.items_of_rank(rank, size);
                    assert_eq!(items.start, next, "{total} {n} {size} {rank}");
                    next = items.end;
                }
                assert_eq!(next, total);
            }
        }
        assert!(Chunks::new(4, 1, 2, "--chunks")
            .unwrap_err()
            .to_string()
            .contains("fewer than the 2 MPI ranks"));
        assert!(Chunks::new(4, 5, 1, "--chunks").is_err());
    }

    #[test]
    fn chunk_zero_is_the_single_stream_and_chunks_differ() {
        let mut a = chunk_rng(7, 3, 0);
        let mut b = crate::vmc::Vmc::rng_for(7, 3);
        assert_eq!(a.random::<u64>(), b.random::<u64>());
        let firsts: Vec<u64> = (0..8).map(|c| chunk_rng(7, 3, c).random()).collect();
        for i in 0..8 {
            for j in 0..i {
                assert_ne!(firsts[i], firsts[j]);
            }
        }
    }

    /// A fake world of several ranks seen from one of them: gathers return preset buffers.
    struct Fake {
        rank: usize,
        others: Vec<Vec<u8>>,
    }

    impl Communicator for Fake {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.others.len()
        }
        fn local_rank(&self) -> usize {
            self.rank
        }
        fn local_size(&self) -> usize {
            self.others.len()
        }
        fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>> {
            let mut v = self.others.clone();
            v[self.rank] = local.to_vec();
            v
        }
        fn barrier(&self) {}
        fn abort(&self, _: i32) -> ! {
            panic!("abort")
        }
        fn comm_seconds(&self) -> f64 {
            0.0
        }
    }

    #[test]
    fn diverged_ranks_are_named() {
        let same = Fake {
            rank: 0,
            others: vec![vec![0; 8], 5u64.to_le_bytes().to_vec()],
        };
        assert!(check_same(&same, 5, "parameters").is_ok());
        let diff = Fake {
            rank: 0,
            others: vec![vec![0; 8], 6u64.to_le_bytes().to_vec(), vec![0; 8]],
        };
        let e = check_same(&diff, 5, "parameters").unwrap_err().to_string();
        assert!(e.contains("parameters of rank 1"), "{e}");
        let g = gather_chunks(
            &Fake {
                rank: 1,
                others: vec![1.5f64.to_le_bytes().to_vec(), vec![]],
            },
            vec![2.5, 3.5],
        );
        assert_eq!(g, vec![1.5, 2.5, 3.5]);
        assert_ne!(checksum_f32(&[1.0, 2.0]), checksum_f32(&[2.0, 1.0]));
    }

    #[test]
    fn one_gpu_per_local_rank() {
        assert_eq!(device_for("cuda", 3, 2), "cuda:1");
        assert_eq!(device_for("cuda:0", 3, 2), "cuda:0");
        assert_eq!(device_for("cpu", 3, 2), "cpu");
    }
}
