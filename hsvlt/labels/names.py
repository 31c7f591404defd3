"""The label names of the public multi-label benchmarks, in the order their annotations index them.

These tuples are the one copy of each list in the project: the built-in datasets' loaders and the shipped label
embeddings (`hsvlt/labels/sets/*.npz`, rebuilt by `python -m hsvlt.labels --set NAME`) both take their names from
here. A dataset of your own names its labels in its own module (docs/DESIGN.md, "Datasets").
"""

# PASCAL VOC 2007/2012: the 20 classes in the standard alphabetical order.
VOC = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)

# MS-COCO 2014/2017: the 80 object categories in ascending category-id order (ids 1..90 with gaps).
COCO = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

# NUS-WIDE: the 81 concepts in the order of the official Concepts81.txt.
NUSWIDE = (
    "airport", "animal", "beach", "bear", "birds", "boats", "book", "bridge", "buildings", "cars",
    "castle", "cat", "cityscape", "clouds", "computer", "coral", "cow", "dancing", "dog",
    "earthquake", "elk", "fire", "fish", "flags", "flowers", "food", "fox", "frost", "garden",
    "glacier", "grass", "harbor", "horses", "house", "lake", "leaf", "map", "military", "moon",
    "mountain", "nighttime", "ocean", "person", "plane", "plants", "police", "protest", "railroad",
    "rainbow", "reflection", "road", "rocks", "running", "sand", "sign", "sky", "snow", "soccer",
    "sports", "statue", "street", "sun", "sunset", "surf", "swimmers", "tattoo", "temple", "tiger",
    "tower", "town", "toy", "train", "tree", "valley", "vehicle", "water", "waterfall", "wedding",
    "whales", "window", "zebra",
)

# The built-in generated `shapes` dataset (hsvlt/data/shapes.py): the order is the order its shapes are drawn in.
SHAPES = (
    "circle", "square", "triangle", "star", "cross", "heart", "ring", "crescent moon", "arrow", "lightning bolt",
)

# Fashion-MNIST's 10 classes in its label order (hsvlt/data/fashion_mosaic.py).
FASHION = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
