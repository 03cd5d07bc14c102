# Gantry's data plane on every client node: invocations on port 8080, routed
# to the workers by the scheduler's route table. Put your load balancer in
# front of port 8080 on the nodes.
#
#   nomad job run deploy/nomad/gantry-activator.nomad.hcl

variable "image" {
  type    = string
  default = "gantry-worker:dev"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "kafka_brokers" {
  type        = string
  description = "Kafka brokers (host:port,...) for inference records; empty: no capture"
  default     = ""
}

job "gantry-activator" {
  type        = "system"
  datacenters = var.datacenters

  group "activator" {
    network {
      port "http" {
        static = 8080
      }
    }

    service {
      name     = "gantry-activator"
      provider = "nomad"
      port     = "http"

      check {
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    # Deregister first, then stop: the load balancer drops the node before
    # the activator refuses connections.
    shutdown_delay = "5s"

    task "activator" {
      driver = "docker"

      config {
        image = var.image
        ports = ["http"]
        args  = ["activator"]
      }

      # The scheduler and the autoscaler are found through Nomad's service
      # registry; the task restarts when they move.
      template {
        destination = "local/gantry.env"
        env         = true
        data        = <<-EOT
          {{ range nomadService "gantry-scheduler" }}GANTRY_SCHEDULER=http://{{ .Address }}:{{ .Port }}
          {{ end }}{{ range nomadService "gantry-autoscaler" }}GANTRY_AUTOSCALER=http://{{ .Address }}:{{ .Port }}
          {{ end }}
        EOT
      }

      env {
        GANTRY_LISTEN        = "0.0.0.0:${NOMAD_PORT_http}"
        GANTRY_KAFKA_BROKERS = var.kafka_brokers
      }

      resources {
        cpu    = 1000
        memory = 1024
      }

      # Held requests may wait for a cold start; give them time to finish.
      kill_timeout = "35s"
    }
  }
}
