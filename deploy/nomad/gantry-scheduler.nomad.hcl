# Gantry's control plane: endpoints API, model registry, route table, and
# the nomad driver that runs every served entity as a job of its own.
#
# One instance: the endpoint store is a bbolt file on a host volume, which
# also pins the scheduler to the node that has the volume. Its port is
# static so that the artifact URLs it hands the worker jobs stay valid
# across restarts: a changed URL would make Nomad replace every worker.
#
#   nomad acl policy apply -namespace default -job gantry-scheduler \
#     gantry-scheduler deploy/nomad/gantry-scheduler-policy.hcl
#   nomad job run -var image=registry.example.com/gantry:1.0 deploy/nomad/gantry-scheduler.nomad.hcl

variable "image" {
  type        = string
  description = "image with the gantry binary as its entrypoint (make image builds gantry-worker:dev)"
  default     = "gantry-worker:dev"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "advertise_url" {
  type        = string
  description = "URL that Nomad clients fetch model artifacts from; empty: this node's address and port 8081"
  default     = ""
}

variable "clickhouse" {
  type        = string
  description = "ClickHouse native address (host:9000) for inference tables; empty: tables off"
  default     = ""
}

job "gantry-scheduler" {
  type        = "service"
  datacenters = var.datacenters

  group "scheduler" {
    count = 1

    network {
      port "http" {
        static = 8081
      }
    }

    volume "data" {
      type   = "host"
      source = "gantry-data"
    }

    service {
      name     = "gantry-scheduler"
      provider = "nomad"
      port     = "http"

      check {
        type     = "http"
        path     = "/readyz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "scheduler" {
      driver = "docker"

      config {
        image = var.image
        ports = ["http"]
        args  = ["scheduler"]
      }

      # The driver reaches Nomad through the Task API socket with this
      # task's workload identity; the policy above says what it may do.
      identity {
        env = true
      }

      # The advertised URL defaults to this node's address and the static
      # port, which the host volume keeps stable.
      template {
        destination = "local/advertise.env"
        env         = true
        data        = <<-EOT
          GANTRY_ADVERTISE_URL={{ with "${var.advertise_url}" }}{{ . }}{{ else }}http://{{ env "NOMAD_ADDR_http" }}{{ end }}
        EOT
      }

      volume_mount {
        volume      = "data"
        destination = "/data"
      }

      env {
        NOMAD_ADDR           = "unix://${NOMAD_SECRETS_DIR}/api.sock"
        GANTRY_LISTEN        = "0.0.0.0:${NOMAD_PORT_http}"
        GANTRY_DATA_DIR      = "/data"
        GANTRY_DRIVER        = "nomad"
        GANTRY_TASK_DRIVER   = "docker"
        GANTRY_WORKER_IMAGE  = var.image
        GANTRY_CLICKHOUSE    = var.clickhouse
      }

      resources {
        cpu    = 500
        memory = 512
      }

      # Uploads and config updates finish before the scheduler stops.
      kill_timeout = "35s"
    }
  }
}
