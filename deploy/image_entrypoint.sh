#!/bin/sh
# Entrypoint of the pipeline image (deploy/Dockerfile).
#
#   IMAGE COMMAND [ARG...]   runs the command (python -m ..., bash, tfx-image-pipeline ...)
#   IMAGE --worker_pool      a Beam SDK worker pool on port 50000, for
#                            --environment_type=EXTERNAL --environment_config=HOST:50000
#   IMAGE --FLAG...          Beam's SDK harness: flags go to Beam's boot binary, as Dataflow,
#                            Flink and Spark start their SDK containers
#
# Where the image was built without Beam's boot binary (BEAM_SDK_IMAGE=''), `--worker_pool`
# runs Beam's Python worker pool itself (extra flags go to it, e.g. --service_port=N), and other
# boot flags are refused with a message.
set -e
BEAM_BOOT=/opt/apache/beam/boot

case "${1:-}" in
    -*) ;;
    "")
        echo "usage: IMAGE COMMAND [ARG...] | IMAGE --worker_pool | IMAGE --BEAM_BOOT_FLAG..." >&2
        exit 2
        ;;
    *) exec "$@" ;;
esac

if [ -x "$BEAM_BOOT" ]; then
    exec "$BEAM_BOOT" "$@"
fi
if [ "$1" = "--worker_pool" ]; then
    shift
    case " $* " in
        *" --service_port"*) ;;
        *) set -- --service_port=50000 "$@" ;;
    esac
    exec python -m apache_beam.runners.worker.worker_pool_main "$@"
fi
echo "this image has no Beam boot binary ($BEAM_BOOT: built with BEAM_SDK_IMAGE=''), so it" \
    "cannot be a Beam SDK harness container started with '$1'; use it as an external worker" \
    "pool instead: run it with --worker_pool and give the runner --environment_type=EXTERNAL" \
    "--environment_config=HOST:50000" >&2
exit 2
