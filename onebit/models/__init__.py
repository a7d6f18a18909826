"""Model zoo: ``create_model(name, num_classes=...)`` builds any registered architecture."""
from onebit.models import irnet_small, mobilenet, resarch, resnet_cifar, small, vgg  # noqa: F401  (registers the models)
from onebit.models.registry import create_model, get_entry, list_models, register_model
from onebit.models.trained import TrainedModel, load_trained_model

create = create_model

__all__ = ["create", "create_model", "get_entry", "list_models", "register_model", "TrainedModel", "load_trained_model"]
