// Go broadcast peer in the design of the gorilla/websocket chat example
// (examples/chat: hub.go, client.go): a Hub goroutine owns the set of
// clients and fans every message out to each client's buffered send
// channel; a client whose channel is full is dropped; each client has a
// read pump and a write pump goroutine.
//
// Differences from the example, all so that it serves the same benchmark as
// the other peers: one hub per room (room = request path + query, created on
// demand) instead of one global hub; every message is written as its own
// text frame (the example coalesces queued messages into one frame joined
// by newlines, which would turn N deliveries into one frame); no HTML page;
// the read limit is 64 KiB instead of 512 bytes.
//
// Build (offline, Debian golang-go + golang-github-gorilla-websocket-dev):
//   GO111MODULE=off GOPATH=/usr/share/gocode go build -o gohub main.go
// Usage: gohub -addr 127.0.0.1:PORT
package main

import (
	"flag"
	"log"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const (
	writeWait      = 10 * time.Second
	pongWait       = 60 * time.Second
	pingPeriod     = (pongWait * 9) / 10
	maxMessageSize = 65536
)

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 1024,
	CheckOrigin:     func(r *http.Request) bool { return true },
}

// Hub maintains the set of active clients of one room and broadcasts
// messages to them.
type Hub struct {
	clients    map[*Client]bool
	broadcast  chan []byte
	register   chan *Client
	unregister chan *Client
}

func newHub() *Hub {
	return &Hub{
		broadcast:  make(chan []byte),
		register:   make(chan *Client),
		unregister: make(chan *Client),
		clients:    make(map[*Client]bool),
	}
}

func (h *Hub) run() {
	for {
		select {
		case client := <-h.register:
			h.clients[client] = true
		case client := <-h.unregister:
			if _, ok := h.clients[client]; ok {
				delete(h.clients, client)
				close(client.send)
			}
		case message := <-h.broadcast:
			for client := range h.clients {
				select {
				case client.send <- message:
				default:
					close(client.send)
					delete(h.clients, client)
				}
			}
		}
	}
}

// Client is a middleman between the websocket connection and the hub.
type Client struct {
	hub  *Hub
	conn *websocket.Conn
	send chan []byte
}

func (c *Client) readPump() {
	defer func() {
		c.hub.unregister <- c
		c.conn.Close()
	}()
	c.conn.SetReadLimit(maxMessageSize)
	c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error { c.conn.SetReadDeadline(time.Now().Add(pongWait)); return nil })
	for {
		_, message, err := c.conn.ReadMessage()
		if err != nil {
			break
		}
		c.conn.SetReadDeadline(time.Now().Add(pongWait))
		c.hub.broadcast <- message
	}
}

func (c *Client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case message, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if !ok {
				c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			if err := c.conn.WriteMessage(websocket.TextMessage, message); err != nil {
				return
			}
		case <-ticker.C:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

var (
	hubsMu sync.Mutex
	hubs   = map[string]*Hub{}
)

func hubFor(room string) *Hub {
	hubsMu.Lock()
	defer hubsMu.Unlock()
	h := hubs[room]
	if h == nil {
		h = newHub()
		hubs[room] = h
		go h.run()
	}
	return h
}

func serveWs(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	client := &Client{hub: hubFor(r.URL.RequestURI()), conn: conn, send: make(chan []byte, 256)}
	client.hub.register <- client
	go client.writePump()
	go client.readPump()
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9003", "http service address")
	flag.Parse()
	http.HandleFunc("/", serveWs)
	log.Printf("go %s gorilla/websocket hub broadcast peer on ws://%s/ (GOMAXPROCS %d)",
		runtime.Version(), *addr, runtime.GOMAXPROCS(0))
	log.Fatal(http.ListenAndServe(*addr, nil))
}
