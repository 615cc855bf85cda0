"""The named architectures. Each builder takes the Keras module to build with (`keras` for Keras 3,
`tf_keras` for the legacy Keras 2 that quantization-aware training needs) and uses only API the two share,
so both give the same layers in the same order and weights copy across with `set_weights`."""
from __future__ import annotations


def _l2(km, value: float):
    return km.regularizers.l2(value) if value else None


def simple_cnn(km, input_shape, num_classes, *, filters=64, dense_units=128, l2=1e-4, dropout=0.3,
               activation="relu", bn_momentum=0.9, **_):
    """Two blocks Conv -> BatchNorm -> Activation -> MaxPool (the second with half the filters), then
    Dense -> BatchNorm -> Activation -> Dropout -> softmax.

    BatchNorm momentum is 0.9 rather than Keras' 0.99: on ~1k images an epoch is ~36 steps, and with 0.99 the
    moving statistics lag the weights for tens of epochs (validation accuracy ~0.7 after 12 epochs here).
    """
    L = km.layers
    inputs = L.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for i, f in enumerate((int(filters), max(1, int(filters) // 2))):
        x = L.Conv2D(f, 3, padding="same", use_bias=False, kernel_regularizer=_l2(km, l2), name=f"conv{i + 1}")(x)
        x = L.BatchNormalization(momentum=bn_momentum, name=f"bn{i + 1}")(x)
        x = L.Activation(activation, name=f"act{i + 1}")(x)
        x = L.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(int(dense_units), use_bias=False, kernel_regularizer=_l2(km, l2), name="dense")(x)
    x = L.BatchNormalization(momentum=bn_momentum, name="bn_dense")(x)
    x = L.Activation(activation, name="act_dense")(x)
    x = L.Dropout(dropout, name="dropout")(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probs")(x)
    return km.Model(inputs, outputs, name="simple_cnn")


def _tutorial_trunk(km, input_shape, last_filters: int):
    """Conv(32) -> Pool -> Conv(64) -> Pool -> Conv(`last_filters`) -> Flatten, valid padding: (inputs, x)."""
    L = km.layers
    inputs = L.Input(shape=tuple(input_shape), name="image")
    x = L.Conv2D(32, 3, activation="relu", name="conv1")(inputs)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = L.MaxPooling2D(2, name="pool2")(x)
    x = L.Conv2D(last_filters, 3, activation="relu", name="conv3")(x)
    return inputs, L.Flatten(name="flatten")(x)


def convnet(km, input_shape, num_classes, **_):
    """The Keras book's MNIST convnet: Conv(32) -> Pool -> Conv(64) -> Pool -> Conv(128) -> Flatten -> softmax."""
    inputs, x = _tutorial_trunk(km, input_shape, 128)
    outputs = km.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return km.Model(inputs, outputs, name="convnet")


def tf_cnn(km, input_shape, num_classes, *, dense_units=64, **_):
    """The TensorFlow tutorial CNN (tensorflow.org/tutorials/images/cnn, there on MNIST and CIFAR-10):
    Conv(32) -> Pool -> Conv(64) -> Pool -> Conv(64) -> Flatten -> Dense(64) -> softmax, valid padding."""
    L = km.layers
    inputs, x = _tutorial_trunk(km, input_shape, 64)
    x = L.Dense(int(dense_units), activation="relu", name="dense")(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probs")(x)
    return km.Model(inputs, outputs, name="tf_cnn")


def cifar_cnn(km, input_shape, num_classes, *, filters=32, dense_units=512, dropout=0.25, **_):
    """The Keras CIFAR-10 example CNN: two blocks Conv(same) -> Conv -> MaxPool -> Dropout (`filters`, then twice
    as many), Flatten -> Dense(`dense_units`) -> Dropout(2 x `dropout`) -> softmax."""
    L = km.layers
    inputs = L.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for b, f in enumerate((int(filters), 2 * int(filters)), start=1):
        x = L.Conv2D(f, 3, padding="same", activation="relu", name=f"block{b}_conv1")(x)
        x = L.Conv2D(f, 3, activation="relu", name=f"block{b}_conv2")(x)
        x = L.MaxPooling2D(2, name=f"block{b}_pool")(x)
        x = L.Dropout(dropout, name=f"block{b}_dropout")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(int(dense_units), activation="relu", name="dense")(x)
    x = L.Dropout(min(0.9, 2 * dropout), name="dropout")(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probs")(x)
    return km.Model(inputs, outputs, name="cifar_cnn")


def vgg_cifar(km, input_shape, num_classes, *, l2=0.0, bn_momentum=0.9, **_):
    """Three blocks of two 3x3 convs with BatchNorm, MaxPool and Dropout(0.25) (32/64/128 filters), then
    Dense(256) + BatchNorm + Dropout(0.5)."""
    L = km.layers
    inputs = L.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for b, f in enumerate((32, 64, 128), start=1):
        for c in (1, 2):
            x = L.Conv2D(f, 3, padding="same", activation="relu", kernel_regularizer=_l2(km, l2),
                         name=f"block{b}_conv{c}")(x)
            x = L.BatchNormalization(momentum=bn_momentum, name=f"block{b}_bn{c}")(x)
        x = L.MaxPooling2D(2, name=f"block{b}_pool")(x)
        x = L.Dropout(0.25, name=f"block{b}_drop")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(256, activation="relu", name="dense")(x)
    x = L.BatchNormalization(momentum=bn_momentum, name="bn_dense")(x)
    x = L.Dropout(0.5, name="drop_dense")(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probs")(x)
    return km.Model(inputs, outputs, name="vgg_cifar")


def resnet8(km, input_shape, num_classes, *, l2=1e-4, bn_momentum=0.9, **_):
    """ResNet-8, the MLPerf Tiny image-classification reference (three residual stacks, 16/32/64 filters)."""
    L = km.layers

    def conv(f, k, s, name):
        return L.Conv2D(f, k, strides=s, padding="same", kernel_initializer="he_normal",
                        kernel_regularizer=_l2(km, l2), name=name)

    inputs = L.Input(shape=tuple(input_shape), name="image")
    x = conv(16, 3, 1, "stem_conv")(inputs)
    x = L.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = L.Activation("relu", name="stem_relu")(x)
    for i, (f, s) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
        y = conv(f, 3, s, f"stack{i}_conv1")(x)
        y = L.BatchNormalization(momentum=bn_momentum, name=f"stack{i}_bn1")(y)
        y = L.Activation("relu", name=f"stack{i}_relu1")(y)
        y = conv(f, 3, 1, f"stack{i}_conv2")(y)
        y = L.BatchNormalization(momentum=bn_momentum, name=f"stack{i}_bn2")(y)
        if s != 1:
            x = conv(f, 1, s, f"stack{i}_shortcut")(x)
        x = L.Add(name=f"stack{i}_add")([x, y])
        x = L.Activation("relu", name=f"stack{i}_relu2")(x)
    pool = int(min(x.shape[1], x.shape[2]))
    x = L.AveragePooling2D(pool_size=pool, name="avg_pool")(x)
    x = L.Flatten(name="flatten")(x)
    outputs = L.Dense(num_classes, activation="softmax", kernel_initializer="he_normal", name="probs")(x)
    return km.Model(inputs, outputs, name="resnet8")


def mobilenet_v2(km, input_shape, num_classes, *, alpha=0.35, dropout=0.2, weights=None, bn_momentum=0.9, **_):
    """keras.applications MobileNetV2 (random init unless weights="imagenet"), flattened into one
    functional graph (no nested model, so quantization-aware training can annotate every layer).

    keras.applications builds its BatchNorm layers with momentum 0.999, made for ImageNet's 10k steps an
    epoch; from random init on a few thousand images the moving statistics never catch up and the model
    predicts one class at inference (0.10 on digits). `bn_momentum` (0.9) replaces it; None keeps 0.999.
    """
    L = km.layers
    inputs = L.Input(shape=tuple(input_shape), name="image")
    base = km.applications.MobileNetV2(
        input_tensor=inputs, input_shape=tuple(input_shape), alpha=float(alpha), include_top=False, weights=weights,
        pooling="avg",  # input_shape too: from the tensor alone, Keras 3 picks the 224x224 imagenet weights
    )
    if bn_momentum is not None:
        for layer in base.layers:
            if isinstance(layer, L.BatchNormalization):
                layer.momentum = float(bn_momentum)
    x = L.Dropout(dropout, name="head_dropout")(base.output)
    outputs = L.Dense(num_classes, activation="softmax", name="probs")(x)
    return km.Model(inputs, outputs, name=f"mobilenet_v2_{alpha}")
