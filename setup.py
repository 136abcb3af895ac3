"""prefix-rft: Prefix-RFT post-training as a staged, cacheable Hugging Face pipeline."""

from setuptools import find_packages, setup

CORE = [
    "torch>=2.4",  # an existing torch is kept; scripts/install.sh picks the CPU build on CPU-only machines
    "transformers>=4.56",
    "datasets>=3.0",
    "accelerate>=1.0",
    "peft>=0.13",
    "evaluate>=0.4",
    "math-verify>=0.7",
    "pyyaml>=6.0",
    "numpy",
    "tensorboard>=2.15",  # the default tracker (train.trackers)
    "matplotlib>=3.8",  # the plots every run and evaluation writes
]

EXTRAS = {
    "dev": ["pytest>=8"],
    "plots": [],  # kept for old install lines: matplotlib is a core requirement
    # the production rollout engine (generate.backend: sglang); GPU machines only: it pins CUDA torch 2.14.1.
    # On a CPU the real engine runs only in the conformance venv of tests/sglang/install.sh (make test-sglang).
    "sglang": ["sglang==0.5.23"],
}

setup(
    name="prefix-rft",
    version="0.1.0",
    description="Prefix-RFT (arXiv 2507.01679) as a staged Hugging Face pipeline: curate, prefixes, generate, "
                "reward, update",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "stages", "stages.*", "evaluation", "evaluation.*"]),
    package_data={"pipeline": ["recipes/*.yaml"], "evaluation": ["metrics/*/*.py", "metrics/*/*.md"]},
    include_package_data=True,
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["prefix-rft=pipeline.cli:main"]},
)
