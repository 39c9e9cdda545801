"""Procedural textures: a platform-independent integer lattice hash, value noise, fractal noise with a
level-of-detail fade (octaves finer than ~2 px fade to their mean, against aliasing) and antialiased line
coverage for painted markings."""

from __future__ import annotations

import numpy as np

_H1, _H2, _H3 = np.uint32(0x27D4EB2D), np.uint32(0x165667B1), np.uint32(0x9E3779B1)


def _finalize(h: np.ndarray) -> np.ndarray:
    """murmur3 finaliser on uint32 -> [0, 1) (deterministic on every platform)."""
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h.astype(np.float32) * np.float32(1.0 / 4294967296.0)


def _lattice(x: np.ndarray) -> np.ndarray:
    return x.astype(np.int32).view(np.uint32)


def lattice_hash(ix: np.ndarray, iy: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Integer lattice hash -> [0, 1)."""
    return _finalize((_lattice(ix) * _H1) ^ (_lattice(iy) * _H2) ^ (seed * _H3))


def value_noise(x: np.ndarray, y: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Smoothly interpolated lattice hash (one octave) in [0, 1)."""
    xf, yf = np.floor(x), np.floor(y)
    fx, fy = x - xf, y - yf
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)
    hx0, hy0 = _lattice(xf) * _H1, _lattice(yf) * _H2
    hx1, hy1 = hx0 + _H1, hy0 + _H2  # (i + 1) * C, wrapping like the uint32 product
    hs = seed * _H3
    a, b = _finalize(hx0 ^ hy0 ^ hs), _finalize(hx1 ^ hy0 ^ hs)
    c, d = _finalize(hx0 ^ hy1 ^ hs), _finalize(hx1 ^ hy1 ^ hs)
    return (a + (b - a) * fx) * (1 - fy) + (c + (d - c) * fx) * fy


def fractal_noise(
    s: np.ndarray,
    t: np.ndarray,
    seed: np.ndarray,
    footprint: np.ndarray,
    wavelengths=(3.0, 1.0, 0.45, 0.2, 0.09),
    amplitudes=(0.25, 0.2, 0.2, 0.2, 0.15),
) -> np.ndarray:
    """Fractal value noise in [0, 1] at surface coordinates (s, t) in metres; ``footprint`` is the size of
    a pixel on the surface (metres), octaves finer than ~2 px fade to their mean (anti-aliasing)."""
    out = np.zeros_like(s)
    for k, (lam, amp) in enumerate(zip(wavelengths, amplitudes, strict=True)):
        weight = np.clip(lam / footprint / 2.0 - 1.0, 0.0, 1.0)
        n = value_noise(s / lam, t / lam, seed + np.uint32(7919 * (k + 1)))
        out += amp * (0.5 + weight * (n - 0.5))
    return out


def line_coverage(dist: np.ndarray, half_width: float, footprint: np.ndarray) -> np.ndarray:
    """Fraction of a pixel covered by a line of ``half_width`` at signed distance ``dist`` (metres)."""
    return np.clip((half_width - np.abs(dist)) / footprint + 0.5, 0.0, 1.0)
