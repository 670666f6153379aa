// The inpainting mask, painted with the pointer on a canvas laid over the input image.
//
// The canvas has the image's own pixel size (the CSS scales it to the image on screen), so a stroke covers the
// same pixels the server will redraw. Painted pixels are opaque, the rest transparent; the exported mask is
// black and white (white = redraw), cut at half opacity so the edge the user sees is the edge the server keeps.

const COLOUR = [255, 48, 96]; // what painted pixels look like (the canvas is shown half transparent)

export class MaskPainter {
  constructor(canvas) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d", { willReadFrequently: true });
    this.brush = 16;
    this.mode = "paint";
    this.version = 0; // changes with every edit (main.js uploads the mask again only when it changed)
    this.last = null;
    canvas.addEventListener("pointerdown", (event) => this.down(event));
    canvas.addEventListener("pointermove", (event) => this.move(event));
    for (const name of ["pointerup", "pointercancel"]) canvas.addEventListener(name, () => { this.last = null; });
  }

  /** A new, empty mask of `width` × `height` image pixels. */
  reset(width, height) {
    this.canvas.width = width;
    this.canvas.height = height;
    this.changed();
  }

  point(event) {
    const box = this.canvas.getBoundingClientRect();
    return [
      ((event.clientX - box.left) * this.canvas.width) / box.width,
      ((event.clientY - box.top) * this.canvas.height) / box.height,
    ];
  }

  down(event) {
    if (event.button !== 0) return;
    event.preventDefault();
    this.canvas.setPointerCapture(event.pointerId);
    this.last = this.point(event);
    this.stroke(this.last, this.last);
  }

  move(event) {
    if (!this.last) return;
    const next = this.point(event);
    this.stroke(this.last, next);
    this.last = next;
  }

  stroke(from, to) {
    const c = this.context;
    c.save();
    c.globalCompositeOperation = this.mode === "erase" ? "destination-out" : "source-over";
    c.strokeStyle = c.fillStyle = `rgb(${COLOUR.join(",")})`;
    c.lineWidth = this.brush;
    c.lineCap = c.lineJoin = "round";
    c.beginPath();
    c.moveTo(...from);
    c.lineTo(...to);
    c.stroke();
    c.restore();
    this.changed();
  }

  clear() {
    this.context.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.changed();
  }

  /** Painted becomes unpainted and the reverse. */
  invert() {
    this.transform((alpha) => (alpha >= 128 ? 0 : 255));
  }

  /** Replace the mask by a black-and-white image (white = redraw), e.g. the mask of a reused request. */
  load(image) {
    const c = this.context;
    c.clearRect(0, 0, this.canvas.width, this.canvas.height);
    c.drawImage(image, 0, 0, this.canvas.width, this.canvas.height);
    this.transform((alpha, pixel) => (alpha && pixel[0] + pixel[1] + pixel[2] >= 3 * 128 ? 255 : 0));
  }

  /** Apply `alphaOf(alpha, [r, g, b])` to every pixel, painting with the mask colour. */
  transform(alphaOf) {
    const { width, height } = this.canvas;
    if (!width || !height) return;
    const image = this.context.getImageData(0, 0, width, height);
    const data = image.data;
    for (let i = 0; i < data.length; i += 4) {
      const alpha = alphaOf(data[i + 3], [data[i], data[i + 1], data[i + 2]]);
      data.set([...COLOUR, alpha], i);
    }
    this.context.putImageData(image, 0, 0);
    this.changed();
  }

  isEmpty() {
    const { width, height } = this.canvas;
    const data = this.context.getImageData(0, 0, width, height).data;
    for (let i = 3; i < data.length; i += 4) if (data[i] >= 128) return false;
    return true;
  }

  /** The mask as a black-and-white PNG Blob (white = redraw). */
  toBlob() {
    const { width, height } = this.canvas;
    const out = document.createElement("canvas");
    out.width = width;
    out.height = height;
    const context = out.getContext("2d");
    const source = this.context.getImageData(0, 0, width, height).data;
    const image = context.createImageData(width, height);
    for (let i = 0; i < source.length; i += 4) {
      const value = source[i + 3] >= 128 ? 255 : 0;
      image.data.set([value, value, value, 255], i);
    }
    context.putImageData(image, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }

  changed() {
    this.version++;
  }
}
