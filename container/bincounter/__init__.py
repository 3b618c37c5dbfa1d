"""bincounter: count the items (1 to 5) in Amazon Bin Image Dataset photos on SageMaker.

One package serves both sides of the SageMaker image (``train`` and ``serve``) and the launch
scripts, so that preprocessing, metric names and hyperparameters can never drift apart.
"""

__version__ = "0.1.0"

#: The counts the model predicts, in the order of its five output logits.
CLASSES: tuple[int, ...] = (1, 2, 3, 4, 5)

#: The torchvision ResNet depths a model can be built on (hyperparameter ``arch``).
ARCHITECTURES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")

#: Photo file suffixes every side (channels, data preparation, invoke) treats as photos.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
