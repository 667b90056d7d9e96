"""vista-jax: VISTA-Gym and VISTA-R1 in JAX/Flax NNX."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    # Pins resolve together on Python 3.11 (jax 0.10) and 3.12 (jax 0.11 where available).
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "grain>=0.2.18",
    "gymnasium>=1.0",
    "ml-collections>=1.1.0",
    "tokenizers>=0.22",
    "transformers>=5.0",
    "safetensors>=0.7",
    "aiohttp>=3.13",
    "pydantic>=2.10",
    "jsonschema>=4.23",
    "sympy>=1.13",
    "pillow>=11",
    "numpy>=1.26",
    "tqdm>=4.66",
    # Run logs: TensorBoard scalars (vista_jax.metrics_log), report.md's PNG curves.
    "tensorboardX>=2.6",
    "matplotlib>=3.8",
    "prometheus-client>=0.21",
    # Tool backends, all offline: OpenCV for diagram/chart/scene image processing, and
    # rapidocr, whose wheel bundles the PP-OCR detection/recognition models (ONNX).
    "opencv-python-headless>=4.10",
    "rapidocr>=3.4",
    "onnxruntime>=1.20",
]

EXTRAS = {
    "test": [
        "pytest>=8",
        "pytest-timeout>=2.3",
        "hypothesis>=6.100",
        # The Ray pool's test starts a small local Ray instance (~10 s).
        "ray>=2.40",
        # CPU build only: `torch==2.13.0` resolves to the local CPU wheel on our machines,
        # while a bare `torch` pulls a multi-GB CUDA build. Used only by the parity tests.
        "torch==2.13.0",
        # tests/test_notebooks.py executes notebooks/*.ipynb in a python3 kernel.
        "nbclient>=0.10",
        "nbformat>=5.10",
        "ipykernel>=6.29",
    ],
    # Multi-host worker pool: Ray actors behind the same pool interface (tools_server.pool).
    "ray": ["ray>=2.40"],
}

setup(
    name="vista-jax",
    version="0.1.0",
    description="VISTA-Gym (tool-integrated visual reasoning environment) and VISTA-R1 "
    "(SFT + GRPO for VLM agents) in JAX / Flax NNX.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["vista_jax", "vista_jax.*", "tools_server", "tools_server.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "vista-train=vista_jax.cli:train_main",
            "vista-sft=vista_jax.cli:sft_main",
            "vista-export=vista_jax.cli:export_main",
            "vista-expert=vista_jax.cli:expert_main",
            "vista-eval=vista_jax.eval_cli:eval_main",
            "vista-view=vista_jax.eval_cli:view_main",
            "vista-tools=tools_server.cli:main",
        ],
    },
)
