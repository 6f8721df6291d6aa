# The web app in a container: `make docker-build`, then `make docker-run` (the app on http://127.0.0.1:7860).
# NOT BUILT BY US: the machines this project is developed and tested on have no Docker engine, so this file has never
# been built or run. Its install step is the README's install command, the one CI runs on every change.
FROM python:3.11-slim

RUN useradd --create-home --uid 1000 app
WORKDIR /home/app/secondsight
COPY --chown=app:app . .
# CPU PyTorch from PyTorch's own index first (the default wheels bring gigabytes of CUDA libraries), then the
# README's install command.
RUN pip install --no-cache-dir torch torchvision --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -e ".[dev]"

USER app
WORKDIR /home/app
ENV PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False
EXPOSE 7860
# Inside the container the app listens on all of the container's interfaces, or the published port could not reach
# it (it prints its warning about that); `make docker-run` publishes the port on the host's 127.0.0.1 only.
ENTRYPOINT ["secondsight-app", "--host", "0.0.0.0", "--port", "7860"]
