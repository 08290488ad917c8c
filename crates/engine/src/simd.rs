//! The instruction set the hot loops run with, chosen at run time.
//!
//! One binary runs on any x86-64 CPU: each hot kernel is compiled three times (x86-64 baseline,
//! AVX2+FMA, AVX-512) by [`multiversion!`](crate::multiversion) and the fastest the CPU has is
//! picked on first use. The GEMMs follow the same choice (see `matmul`). `STAGEWISE_SIMD`
//! (`auto`, `baseline`, `avx2`, `avx512`, `neon`) or [`force`] selects a lower path, so one
//! machine can test and time every path it supports. On aarch64 there is one path, NEON.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

/// A code path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// x86-64 baseline (SSE2, no FMA): `a * b + c` is two roundings.
    Baseline,
    /// x86-64-v3: AVX2 and FMA (256-bit vectors).
    Avx2,
    /// x86-64-v4: AVX-512 F/BW/CD/DQ/VL (512-bit vectors, 32 registers).
    Avx512,
    /// aarch64 NEON (128-bit vectors, fused multiply-add).
    Neon,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 4] = [Level::Baseline, Level::Avx2, Level::Avx512, Level::Neon];

    /// Name as `STAGEWISE_SIMD` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Baseline => "baseline",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Neon => "neon",
        }
    }

    /// Whether this CPU can run the level.
    pub fn supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Level::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => has_avx2() && has_avx512(),
            #[cfg(target_arch = "aarch64")]
            Level::Neon => true,
            #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
            Level::Baseline => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Parses a `STAGEWISE_SIMD` value (`auto` is `None`).
    pub fn parse(s: &str) -> Result<Option<Level>, String> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() || s == "auto" {
            return Ok(None);
        }
        Level::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .map(Some)
            .ok_or_else(|| {
                format!("STAGEWISE_SIMD={s:?}: expected auto, baseline, avx2, avx512 or neon")
            })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Baseline => "x86-64 baseline (SSE2)",
            Level::Avx2 => "AVX2+FMA",
            Level::Avx512 => "AVX-512",
            Level::Neon => "NEON",
        })
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("bmi1")
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("lzcnt")
        && std::arch::is_x86_feature_detected!("f16c")
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512cd")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// The levels this CPU supports, lowest first.
pub fn supported() -> Vec<Level> {
    Level::ALL.into_iter().filter(|l| l.supported()).collect()
}

/// The fastest level this CPU supports.
pub fn best() -> Level {
    *supported()
        .last()
        .expect("the baseline is always supported")
}

const UNSET: u8 = u8::MAX;
static ACTIVE: AtomicU8 = AtomicU8::new(UNSET);

fn encode(l: Level) -> u8 {
    Level::ALL.iter().position(|x| *x == l).unwrap() as u8
}

/// The `STAGEWISE_SIMD` choice, checked against this CPU: `Ok(None)` for `auto` or unset.
pub fn from_env() -> Result<Option<Level>, String> {
    let Ok(v) = std::env::var("STAGEWISE_SIMD") else {
        return Ok(None);
    };
    let l = Level::parse(&v)?;
    match l {
        Some(l) if !l.supported() => Err(format!(
            "STAGEWISE_SIMD={}: this CPU does not support {l}; it supports {}",
            l.name(),
            names(&supported())
        )),
        _ => Ok(l),
    }
}

fn names(levels: &[Level]) -> String {
    levels
        .iter()
        .map(|l| l.name())
        .collect::<Vec<_>>()
        .join(", ")
}

thread_local! {
    static LOCAL: std::cell::Cell<u8> = const { std::cell::Cell::new(UNSET) };
}

/// The level the kernels run with: this thread's [`with_level`], else what [`force`] set, else
/// `STAGEWISE_SIMD`, else [`best`]. (A `STAGEWISE_SIMD` this CPU cannot run is ignored here;
/// the CLI reports it as an error.)
#[inline]
pub fn active() -> Level {
    let local = LOCAL.with(|c| c.get());
    if local != UNSET {
        return Level::ALL[local as usize];
    }
    let v = ACTIVE.load(Ordering::Relaxed);
    if v != UNSET {
        return Level::ALL[v as usize];
    }
    let l = from_env().ok().flatten().unwrap_or_else(best);
    ACTIVE.store(encode(l), Ordering::Relaxed);
    l
}

/// Runs every kernel with `level` from now on (process-wide); `None` goes back to the
/// `STAGEWISE_SIMD`/best choice. An error names the levels this CPU supports.
pub fn force(level: Option<Level>) -> Result<(), String> {
    let l = match level {
        Some(l) if !l.supported() => {
            return Err(format!(
                "this CPU does not support {l}; it supports {}",
                names(&supported())
            ));
        }
        Some(l) => l,
        None => from_env().ok().flatten().unwrap_or_else(best),
    };
    ACTIVE.store(encode(l), Ordering::Relaxed);
    Ok(())
}

/// Runs `f` with the kernels this thread calls on `level` (other threads, rayon's workers
/// among them, keep theirs): how single-threaded tests run one path without touching others.
pub fn with_level<R>(level: Level, f: impl FnOnce() -> R) -> Result<R, String> {
    if !level.supported() {
        return Err(format!(
            "this CPU does not support {level}; it supports {}",
            names(&supported())
        ));
    }
    struct Restore(u8);
    impl Drop for Restore {
        fn drop(&mut self) {
            LOCAL.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(LOCAL.with(|c| c.replace(encode(level))));
    Ok(f())
}

/// Compile-time facts of a code path, for kernels generic over it.
pub trait Isa: Copy + Send + Sync + 'static {
    /// `mul_add` is one instruction (else it is a slow library call, so kernels round twice).
    const FMA: bool;
    /// `floor` is one instruction (SSE4.1 and later, NEON).
    const FLOOR: bool;
    /// x86-64 with AVX: kernels may call `#[target_feature(enable = "avx")]` helpers, which
    /// inline into the AVX2 and AVX-512 versions.
    const AVX: bool;
    /// 32 registers of 512 bits (AVX-512): register blocks may hold twice as many vectors.
    const WIDE: bool;
}

/// Marker of the baseline path: on x86-64 no FMA and no SSE4.1; on aarch64 NEON.
#[derive(Clone, Copy, Debug)]
pub struct Base;
/// Marker of the AVX2+FMA path.
#[derive(Clone, Copy, Debug)]
pub struct Avx2;
/// Marker of the AVX-512 path.
#[derive(Clone, Copy, Debug)]
pub struct Avx512;

impl Isa for Base {
    const FMA: bool = cfg!(target_arch = "aarch64");
    const FLOOR: bool = cfg!(target_arch = "aarch64");
    const AVX: bool = false;
    const WIDE: bool = false;
}
impl Isa for Avx2 {
    const FMA: bool = true;
    const FLOOR: bool = true;
    const AVX: bool = cfg!(target_arch = "x86_64");
    const WIDE: bool = false;
}
impl Isa for Avx512 {
    const FMA: bool = true;
    const FLOOR: bool = true;
    const AVX: bool = cfg!(target_arch = "x86_64");
    const WIDE: bool = true;
}

/// `a * b + c`: fused where the path has FMA, two roundings where it does not.
#[inline(always)]
pub fn fma<I: Isa, T: crate::Float>(a: T, b: T, c: T) -> T {
    if I::FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Defines `fn NAME<T: Float>(args) -> R` that runs `body` compiled for the active [`Level`].
///
/// Written as `fn NAME<I, T: Float>(args) -> R { body }`, where `I: Isa` names the path inside
/// the body. Everything the body calls must be `#[inline(always)]` to be compiled for the path.
#[macro_export]
macro_rules! multiversion {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident<$I:ident, T: Float>($($arg:ident: $ty:ty),* $(,)?)
            $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name<T: $crate::Float>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<$I: $crate::simd::Isa, T: $crate::Float>($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(
                enable = "avx,avx2,fma,bmi1,bmi2,lzcnt,popcnt,f16c,avx512f,avx512bw,avx512cd,avx512dq,avx512vl"
            )]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512<T: $crate::Float>($($arg: $ty),*) $(-> $ret)? {
                body::<$crate::simd::Avx512, T>($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx,avx2,fma,bmi1,bmi2,lzcnt,popcnt,f16c")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2<T: $crate::Float>($($arg: $ty),*) $(-> $ret)? {
                body::<$crate::simd::Avx2, T>($($arg),*)
            }

            match $crate::simd::active() {
                // SAFETY: `active` returns only levels this CPU supports.
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Level::Avx512 => unsafe { avx512::<T>($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Level::Avx2 => unsafe { avx2::<T>($($arg),*) },
                _ => body::<$crate::simd::Base, T>($($arg),*),
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_the_baseline_is_always_there() {
        assert_eq!(Level::parse("auto"), Ok(None));
        assert_eq!(Level::parse(" AVX2 "), Ok(Some(Level::Avx2)));
        assert!(Level::parse("sse9").unwrap_err().contains("sse9"));
        let s = supported();
        assert!(!s.is_empty() && s.contains(&best()));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(s[0], Level::Baseline);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(s, vec![Level::Neon]);
    }

    #[test]
    fn fma_rounds_once_only_where_the_path_fuses() {
        // (1 + 2^-12)^2 - (1 + 2^-11) = 2^-24 exactly; unfused, the square rounds it away.
        let (x, c) = (1.0f32 + 2f32.powi(-12), -(1.0f32 + 2f32.powi(-11)));
        assert_eq!(fma::<Avx2, f32>(x, x, c), 2f32.powi(-24));
        let unfused = fma::<Base, f32>(x, x, c);
        if cfg!(target_arch = "aarch64") {
            assert_eq!(unfused, 2f32.powi(-24));
        } else {
            assert_eq!(unfused, 0.0);
        }
    }
}
