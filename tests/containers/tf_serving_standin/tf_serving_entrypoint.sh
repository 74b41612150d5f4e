#!/bin/bash
# tensorflow/serving's /usr/bin/tf_serving_entrypoint.sh, with exec so that `docker stop`
# reaches the server: gRPC on 8500, REST on 8501, the model MODEL_BASE_PATH/MODEL_NAME.
# Arguments are added after these flags (a later flag wins, as in tensorflow_model_server).
exec /usr/bin/tensorflow_model_server --port=8500 --rest_api_port=8501 \
    --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"
