"""Read PCD v0.7 point clouds (PCL's format) with numpy: DATA ascii and DATA binary.

binary_compressed (LZF) is refused with a message saying how to convert the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fmdrive.calibration.camera_model import CalibrationError

_TYPES = {('F', 4): '<f4', ('F', 8): '<f8', ('I', 1): 'i1', ('I', 2): '<i2', ('I', 4): '<i4',
          ('I', 8): '<i8', ('U', 1): 'u1', ('U', 2): '<u2', ('U', 4): '<u4', ('U', 8): '<u8'}
_HEADER_KEYS = ('VERSION', 'FIELDS', 'SIZE', 'TYPE', 'COUNT', 'WIDTH', 'HEIGHT', 'VIEWPOINT', 'POINTS',
                'DATA')
INTENSITY_FIELDS = ('intensity', 'i', 'reflectivity')


class PCDError(CalibrationError):
    """A PCD file is missing, corrupt or in a variant this reader does not support."""


def _parse_header(raw: bytes, path) -> tuple[dict, int]:
    header, offset = {}, 0
    while True:
        end = raw.find(b'\n', offset)
        if end < 0:
            raise PCDError(f'{path}: PCD header ends before a DATA line; is this a PCD file?')
        line = raw[offset:end].decode('ascii', errors='replace').strip()
        offset = end + 1
        if not line or line.startswith('#'):
            continue
        key, _, value = line.partition(' ')
        if key.upper() not in _HEADER_KEYS:
            raise PCDError(f'{path}: unexpected PCD header line {line[:60]!r}; is this a PCD v0.7 file?')
        header[key.upper()] = value.split()
        if key.upper() == 'DATA':
            return header, offset


def read_pcd_fields(path) -> dict[str, np.ndarray]:
    """All fields of a PCD file as {name: (N,) or (N, count) array}, in file order."""
    path = Path(path)
    if not path.is_file():
        raise PCDError(f'PCD file {path} not found')
    raw = path.read_bytes()
    header, offset = _parse_header(raw, path)
    try:
        names = header['FIELDS']
        n_fields = len(names)
        sizes = [int(s) for s in header.get('SIZE', ['4'] * n_fields)]
        types = [t.upper() for t in header.get('TYPE', ['F'] * n_fields)]
        counts = [int(c) for c in header.get('COUNT', ['1'] * n_fields)]
        n_points = int(header['POINTS'][0]) if 'POINTS' in header else \
            int(header['WIDTH'][0]) * int(header['HEIGHT'][0])
    except (KeyError, IndexError, ValueError) as e:
        raise PCDError(f'{path}: malformed PCD header ({e!r}); need FIELDS, SIZE, TYPE and POINTS') from None
    if not (len(sizes) == len(types) == len(counts) == n_fields):
        raise PCDError(f'{path}: FIELDS, SIZE, TYPE and COUNT have different lengths')
    try:
        dtypes = [np.dtype(_TYPES[(t, s)]) for t, s in zip(types, sizes)]
    except KeyError:
        raise PCDError(f'{path}: unsupported field TYPE/SIZE {list(zip(types, sizes))}') from None
    mode = header['DATA'][0].lower()

    if mode == 'binary_compressed':
        raise PCDError(f'{path}: DATA binary_compressed is not supported; convert it first, e.g. '
                       f'`pcl_convert_pcd_ascii_binary {path.name} out.pcd 1` (binary)')
    if mode == 'binary':
        # unique names so padding fields ('_') do not clash in the structured dtype
        uniq = [f'{n}__{i}' for i, n in enumerate(names)]
        dt = np.dtype([(u, d, (c,)) if c > 1 else (u, d) for u, d, c in zip(uniq, dtypes, counts)])
        need = n_points * dt.itemsize
        if len(raw) - offset < need:
            raise PCDError(f'{path}: truncated binary PCD: header says {n_points} points '
                           f'({need} bytes) but only {len(raw) - offset} bytes follow')
        table = np.frombuffer(raw, dtype=dt, count=n_points, offset=offset)
        return {n: np.array(table[u]) for n, u in zip(names, uniq) if n != '_'}
    if mode == 'ascii':
        width = sum(counts)
        try:
            values = np.array(raw[offset:].split(), dtype=np.float64)
        except ValueError as e:
            raise PCDError(f'{path}: ASCII PCD data has a non-numeric value ({e})') from None
        if values.size != n_points * width:
            raise PCDError(f'{path}: ASCII PCD data has {values.size} values, expected '
                           f'{n_points} points x {width} = {n_points * width}; the file is corrupt')
        values = values.reshape(n_points, width)
        out, col = {}, 0
        for n, d, c in zip(names, dtypes, counts):
            block = values[:, col:col + c]
            col += c
            if n != '_':
                out[n] = (block[:, 0] if c == 1 else block).astype(d)
        return out
    raise PCDError(f'{path}: unknown PCD DATA mode {mode!r}; expected ascii or binary')


def read_pcd(path) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity from a PCD file (intensity 0 if absent; NaN rows dropped)."""
    fields = read_pcd_fields(path)
    missing = [k for k in 'xyz' if k not in fields]
    if missing:
        raise PCDError(f'{path}: PCD has no field(s) {", ".join(missing)}; fields are {list(fields)}')
    n = len(fields['x'])
    intensity = next((fields[k] for k in INTENSITY_FIELDS if k in fields), np.zeros(n))
    points = np.empty((n, 4), np.float32)
    for i, column in enumerate((fields['x'], fields['y'], fields['z'], intensity)):
        points[:, i] = column
    return points[np.isfinite(points[:, :3]).all(axis=1)]


def write_pcd(path, points, binary: bool = True) -> None:
    """Write (N, 4) x, y, z, intensity float32 as PCD v0.7 (binary or ascii)."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f'points must be (N, 4) x, y, z, intensity, got {points.shape}')
    n = len(points)
    header = ('# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z intensity\n'
              'SIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\n'
              f'WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n'
              f'DATA {"binary" if binary else "ascii"}\n')
    with open(path, 'wb') as f:
        f.write(header.encode('ascii'))
        if binary:
            f.write(points.astype('<f4').tobytes())
        else:
            np.savetxt(f, points, fmt='%.9g')
