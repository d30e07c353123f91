"""qkernels build: setup.py configures and runs CMakeLists.txt (Ninja) against the installed torch.

Install with `pip install --no-build-isolation -e .` (or without -e) after installing torch, so the
extension builds against the torch you run (offline too). Triton kernels ship as
qkernels.triton_kernels (source folder triton_kernels/), never as a top-level `triton_kernels`.
"""
import os
import subprocess
import sys
import sysconfig

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        try:
            import torch
            import torch.utils.cpp_extension as cpp
        except ImportError:
            sys.exit("qkernels: install torch first (pip install torch==2.13.0), then "
                     "pip install --no-build-isolation -e .")
        import pybind11

        out_dir = os.path.abspath(os.path.dirname(self.get_ext_fullpath(ext.name)))
        build_dir = os.path.abspath(os.path.join(self.build_temp, "cmake"))
        os.makedirs(build_dir, exist_ok=True)
        cfg = [
            "cmake", "-S", os.path.abspath(os.path.dirname(__file__)), "-B", build_dir, "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DQK_TORCH_INCLUDE_DIRS={';'.join(cpp.include_paths())}",
            f"-DQK_TORCH_LIB_DIR={cpp.library_paths()[0]}",
            f"-DQK_PYTHON_INCLUDE={sysconfig.get_paths()['include']}",
            f"-DQK_PYBIND11_INCLUDE={pybind11.get_include()}",
            f"-DQK_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
            f"-DQK_EXT_SUFFIX={sysconfig.get_config_var('EXT_SUFFIX')}",
            f"-DQK_OUTPUT_DIR={out_dir}",
        ]
        subprocess.check_call(cfg)
        jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 2))
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "_C", "-j", jobs])


packages = find_packages(include=["qkernels", "qkernels.*"]) + ["qkernels.triton_kernels"]
setup(
    name="qkernels",
    version="0.1.0",
    description="INT8/INT4 quantized and 2:4 sparse GEMM kernels for PyTorch (C++ CPU, Triton GPU)",
    packages=packages,
    package_dir={"qkernels.triton_kernels": "triton_kernels"},
    package_data={"qkernels": ["py.typed"]},
    ext_modules=[CMakeExtension("qkernels._C")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy"],
    extras_require={"triton": ["triton"]},
)
