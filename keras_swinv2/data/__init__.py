from keras_swinv2.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, preprocess_input
