"""detkd: knowledge distillation for Detectron2 Faster R-CNN students.

Only what every detectron2 user needs is declared here. detectron2 itself is not a
requirement: install it the way you normally do (from source, or a wheel that matches
your torch). This repository's own pinned CPU environment lives in requirements.txt.
"""

from setuptools import find_packages, setup

setup(
    name="detkd",
    version="0.1.0",
    description="Knowledge distillation (Chen 2017, FGD, MSSD) for Detectron2 Faster R-CNN",
    python_requires=">=3.8",
    package_dir={"detkd": "projects/detkd"},
    packages=["detkd"] + ["detkd." + p for p in find_packages("projects/detkd")],
    install_requires=[
        "numpy",
        "pycocotools",
        "matplotlib",
        "Pillow",
        "fvcore",
        "iopath",
        "filelock>=3.12",
    ],
    # the glyphs demo data set draws on the photographs scikit-image ships
    extras_require={"test": ["pytest>=7.3"], "demo": ["scikit-image"], "ray": ["ray>=2.9"]},
    entry_points={"console_scripts": ["detkd-survey=detkd.survey.cli:main"]},
)
