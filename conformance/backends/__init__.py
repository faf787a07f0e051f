"""The bundled backends, one module each, all driven through the same in-process protocol.

``numpy`` (:mod:`._numpy`), ``naive`` (:mod:`._naive`), the CUDA kernel's host build
``cuda-host`` and the flat plan they share (:mod:`._native`, with the kernel source in
``kernels/``), ``numba`` (:mod:`._numba`) and ``cupy`` (:mod:`._cupy`). The runner, the reports
and the CLI never import a backend directly: they resolve a target name
(``adabelief_conformance._targets``), which imports the backend lazily, so that numba and CuPy
stay optional. Adding a backend touches this folder and the target table only.
"""
